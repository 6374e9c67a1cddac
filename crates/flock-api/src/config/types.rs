//! `[[types]]`: the declared artifact types, checked and compiled once for the whole server;
//! errors name the key (`types[1].schema`).

use std::sync::Arc;

use flock_orchestrator::WORKFLOW_ERROR_TYPE;
use flock_schema::{TypeDeclaration, TypeSchemas};

use super::{ConfigError, invalid};

/// Compiles the declarations.
///
/// # Errors
/// An invalid declaration named by its key: a name that is not a type name, declared twice, or
/// `WorkflowError` (`types[i].name`); a schema that is not a JSON Schema object with `"type":
/// "object"` at its root, that its meta-schema refuses, or that refers outside itself
/// (`types[i].schema`).
pub(super) fn compile(declarations: &[TypeDeclaration]) -> Result<Arc<TypeSchemas>, ConfigError> {
    let types = TypeSchemas::new(declarations).map_err(|e| {
        let e = e.within("types");
        invalid(e.field_name().unwrap_or("types"), e.message())
    })?;
    // The names are listed in declaration order, one per declaration.
    if let Some(i) = types
        .names()
        .position(|name| name.as_str() == WORKFLOW_ERROR_TYPE)
    {
        return Err(invalid(
            format!("types[{i}].name"),
            format!(
                "`{WORKFLOW_ERROR_TYPE}` cannot be declared: the orchestrator publishes it, with \
                 a payload of its own"
            ),
        ));
    }
    Ok(Arc::new(types))
}
