# One image with both binaries: uprox-operator and uprox-gateway.
#   make image            (needs a Docker engine)
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p uprox-operator -p uprox-gateway \
 && cp target/release/uprox-operator target/release/uprox-gateway /usr/local/bin/

# Distroless: no shell, no package manager; runs as the unprivileged user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/uprox-operator /usr/local/bin/uprox-gateway /usr/local/bin/
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/uprox-gateway"]
