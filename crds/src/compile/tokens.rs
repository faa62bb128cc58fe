//! MachineTokens: finding each live token's value in the Secret uprox issued it into, checking
//! that the Secret belongs to the token and is current, and reducing the value to its digest.
//!
//! Issuing, rotating and writing token Secrets is the operator's job; this module only reads
//! them. A token's value never leaves this module except as its SHA-256.

use std::collections::BTreeMap;

use crate::common::ObjectId;
use crate::conditions::reason;
use crate::config::TokenConfig;
use crate::machine_token::MachineToken;
use crate::secret::SecretString;
use crate::service::Service;
use crate::token;

use super::diagnostics::{Diagnostics, MACHINE_TOKEN};
use super::policies::Policies;
use super::secrets::{Problem, SecretIndex, value_of};

/// Compiles every live token, sorted by digest. Revoked tokens are left out silently: that is
/// what revoking asks for.
pub(super) fn compile(
    objects: BTreeMap<ObjectId, &MachineToken>,
    services: &BTreeMap<ObjectId, &Service>,
    policies: &Policies,
    secrets: &SecretIndex<'_>,
    diags: &mut Diagnostics,
) -> Vec<TokenConfig> {
    // Tokens are visited in id order, so "the first" of two with one digest is well defined.
    let mut by_digest: BTreeMap<String, TokenConfig> = BTreeMap::new();
    for (id, machine_token) in objects {
        let spec = &machine_token.spec;
        if spec.revoked {
            continue;
        }
        let service = ObjectId::new(&id.namespace, &spec.service);
        if !services.contains_key(&service) {
            diags.error(
                MACHINE_TOKEN,
                &id,
                reason::SERVICE_NOT_FOUND,
                format!(
                    "spec.service names Service {service}, which does not exist, so this token is not accepted; \
                     create the Service (spec.service cannot be changed: to use another Service, create a new MachineToken)"
                ),
            );
            continue;
        }
        let secret = ObjectId::new(&id.namespace, machine_token.secret_name());
        let Some(value) = issued_value(&id, machine_token, &secret, secrets, diags) else {
            continue;
        };
        let digest = token::digest_hex(value.expose());
        if let Some(first) = by_digest.get(&digest) {
            diags.error(
                MACHINE_TOKEN,
                &id,
                reason::SECRET_VALUE_INVALID,
                format!(
                    "Secret {secret} holds the same token as MachineToken {}, so this one is not accepted; \
                     increase spec.rotation to issue a new token",
                    first.id
                ),
            );
            continue;
        }
        let resolved = policies.resolve(MACHINE_TOKEN, &id, &spec.policies, diags);
        let config = TokenConfig {
            digest: digest.clone(),
            id,
            service,
            scopes: spec.scopes.clone(),
            policies: resolved.ids,
            expires_at: spec.expires_at.as_ref().map(|t| t.0.as_second()),
            denied: resolved.denied,
        };
        by_digest.insert(digest, config);
    }
    by_digest.into_values().collect()
}

/// The current token in the Secret `secret`, or `None` with a diagnostic. A Secret uprox did
/// not label for this token is never read: adopting it would let anyone who can create a
/// Secret choose a token.
fn issued_value(
    id: &ObjectId,
    machine_token: &MachineToken,
    secret: &ObjectId,
    secrets: &SecretIndex<'_>,
    diags: &mut Diagnostics,
) -> Option<SecretString> {
    let rotation = machine_token.spec.rotation;
    let not_issued =
        |diags: &mut Diagnostics, message: String| diags.warning(MACHINE_TOKEN, id, reason::NOT_ISSUED, message);
    let found = match secrets.get(secret) {
        Ok(found) => found,
        Err(Problem::NotFound) => {
            not_issued(
                diags,
                format!(
                    "not issued yet: Secret {secret} does not exist. The operator writes it shortly after the MachineToken \
                 is created; in standalone mode, create it with the token under key `{}`, the label {}={} and the \
                 annotation {}={rotation}",
                    token::SECRET_KEY,
                    token::SECRET_LABEL,
                    id.name,
                    token::ROTATION_ANNOTATION,
                ),
            );
            return None;
        }
        Err(problem) => {
            let (reason, message) = problem.describe(secret, token::SECRET_KEY);
            diags.error(MACHINE_TOKEN, id, reason, message);
            return None;
        }
    };
    let meta = &found.metadata;
    if meta.labels.as_ref().and_then(|l| l.get(token::SECRET_LABEL)) != Some(&id.name) {
        not_issued(
            diags,
            format!(
                "the Secret {secret} is not labelled {}={}; uprox does not adopt Secrets it did not issue. Delete or \
             rename that Secret (or set spec.secretName to a free name) so a token can be issued",
                token::SECRET_LABEL,
                id.name
            ),
        );
        return None;
    }
    let held = meta.annotations.as_ref().and_then(|a| a.get(token::ROTATION_ANNOTATION));
    let held = match held.map(|text| text.trim().parse::<u32>()) {
        None => 0,
        Some(Ok(held)) => held,
        Some(Err(_)) => {
            not_issued(
                diags,
                format!(
                    "the Secret {secret} has an annotation {} that is not a number, so which rotation it holds is \
                 unknown; delete the Secret so the current rotation is issued",
                    token::ROTATION_ANNOTATION
                ),
            );
            return None;
        }
    };
    if held < rotation {
        not_issued(
            diags,
            format!(
                "not issued yet: rotation {rotation} requested, the Secret {secret} holds rotation {held}; \
             the old token is no longer accepted and the operator issues the new one shortly"
            ),
        );
        return None;
    }
    let value = match value_of(found, token::SECRET_KEY) {
        Ok(value) => value,
        Err(problem) => {
            let what = match problem {
                Problem::KeyNotFound { .. } => "the key is missing",
                Problem::NotUtf8 => "the value is not UTF-8 text",
                Problem::Empty | Problem::NotFound | Problem::Duplicate => "the value is empty",
            };
            let (reason, _) = problem.describe(secret, token::SECRET_KEY);
            diags.error(
                MACHINE_TOKEN,
                id,
                reason,
                format!(
                    "Secret {secret} holds no token under key `{}` ({what}), so none is accepted; delete the Secret \
                     so a new token is issued",
                    token::SECRET_KEY
                ),
            );
            return None;
        }
    };
    if !token::is_well_formed(value.expose()) {
        diags.error(
            MACHINE_TOKEN,
            id,
            reason::SECRET_VALUE_INVALID,
            format!(
                "the value of key `{}` in Secret {secret} is not a uprox token ({} followed by 43 base64url \
                 characters), so it is not accepted; delete the Secret so a new token is issued",
                token::SECRET_KEY,
                token::PREFIX
            ),
        );
        return None;
    }
    Some(value)
}
