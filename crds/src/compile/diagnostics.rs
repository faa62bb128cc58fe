//! What `compile()` tells people: one [`Diagnostic`] per problem, naming the resource in trouble,
//! a reason from [`crate::conditions::reason`] and a message that says what is wrong and how to
//! fix it.
//!
//! Messages name Secrets and keys but never carry a secret value. Turning diagnostics into
//! conditions and Events is the operator's business, not this module's.

use std::fmt;

use crate::common::ObjectId;

/// The Kubernetes kind of a Provider.
pub(super) const PROVIDER: &str = "Provider";
/// The Kubernetes kind of a Service.
pub(super) const SERVICE: &str = "Service";
/// The Kubernetes kind of a MachineToken.
pub(super) const MACHINE_TOKEN: &str = "MachineToken";
/// The Kubernetes kind of a Policy.
pub(super) const POLICY: &str = "Policy";
/// The Kubernetes kind of a Budget.
pub(super) const BUDGET: &str = "Budget";

/// How bad a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The resource, or part of it, is left out of the config or denies every request.
    Error,
    /// The resource is compiled but probably not doing what its author wants.
    Warning,
}

/// One problem with one resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The Kubernetes kind: `Provider`, `Service`, `MachineToken`, `Policy` or `Budget`.
    pub kind: &'static str,
    /// The resource in trouble.
    pub object: ObjectId,
    /// Error or warning.
    pub severity: Severity,
    /// A constant from [`crate::conditions::reason`].
    pub reason: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Diagnostic {
    /// Whether this is an error rather than a warning.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.kind, self.object, self.message)
    }
}

/// The diagnostics gathered during one compilation.
#[derive(Debug, Default)]
pub(super) struct Diagnostics(Vec<Diagnostic>);

impl Diagnostics {
    /// Records an error.
    pub(super) fn error(&mut self, kind: &'static str, object: &ObjectId, reason: &'static str, message: String) {
        self.push(kind, object, Severity::Error, reason, message);
    }

    /// Records a warning.
    pub(super) fn warning(&mut self, kind: &'static str, object: &ObjectId, reason: &'static str, message: String) {
        self.push(kind, object, Severity::Warning, reason, message);
    }

    fn push(
        &mut self,
        kind: &'static str,
        object: &ObjectId,
        severity: Severity,
        reason: &'static str,
        message: String,
    ) {
        self.0.push(Diagnostic { kind, object: object.clone(), severity, reason, message });
    }

    /// Sorted by (kind, object, message) so the output does not depend on input order; exact
    /// repeats (the same broken manifest read twice) are kept once.
    pub(super) fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.0.sort_by(|a, b| {
            (a.kind, &a.object, &a.message, a.severity, a.reason)
                .cmp(&(b.kind, &b.object, &b.message, b.severity, b.reason))
        });
        self.0.dedup();
        self.0
    }
}
