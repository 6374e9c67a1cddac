//! Who a request acts for: the [`Caller`], its tenant and its scopes, which every handler that
//! reads or changes a tenant's data takes.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest};
use flock_models::{Scope, Scopes, TenantId};

use crate::error::{ApiError, ErrorCode};

/// The tenant a request acts for and what it may do there.
///
/// Authentication leaves it in the request's extensions; a request that carries none acts as
/// the default tenant with every scope, which is how the server answers while it requires no
/// key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    /// Whose artifacts, workflows and deliveries the request sees and makes.
    pub(crate) tenant: TenantId,
    /// What it may do.
    pub(crate) scopes: Scopes,
}

impl Caller {
    /// The default tenant with every scope.
    pub(crate) fn keyless() -> Self {
        Caller {
            tenant: TenantId::default_tenant(),
            scopes: Scopes::all(),
        }
    }

    /// Refuses the request with 403 `forbidden`, naming the scope, unless the caller has it.
    pub(crate) fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(scope) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("this key lacks the `{scope}` scope this route needs"),
            ))
        }
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(Ok(req
            .extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or_else(Caller::keyless)))
    }
}
