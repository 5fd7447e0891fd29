//! Schemas for fields whose shape belongs to another project (Istio's match and policies, Gateway API's
//! filters): the CRD keeps them as given, and Serin reads what it supports from them and names the rest in a
//! status condition.

use schemars::{Schema, SchemaGenerator, json_schema};

/// An object kept as given.
pub fn any_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// A list of objects kept as given.
pub fn any_object_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
    })
}

/// A Kubernetes port: a number or a name.
pub fn int_or_string(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"x-kubernetes-int-or-string": true})
}
