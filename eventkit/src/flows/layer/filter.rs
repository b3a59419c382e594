//! [`Filter`]: a layer that lets only some records reach a handler.

use std::collections::BTreeSet;

use super::{Flow, HandleLayer};
use crate::flows::context::Context;

/// Lets a handler see only records that pass every rule; the others settle as skipped
/// (counted in `eventkit_records_skipped_total`, logged at `debug`), without running it.
///
/// ```
/// use eventkit::layer::Filter;
/// // Only records of these event types, and only tenant "acme"'s.
/// let filter = Filter::new().event_types(["OrderPlaced", "OrderCancelled"]).tenants(["acme"]);
/// # let _ = eventkit::App::builder().group_layer("billing", filter);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Filter {
    event_types: Option<BTreeSet<String>>,
    headers: Vec<(String, Vec<u8>)>,
    tenants: Option<BTreeSet<String>>,
}

impl Filter {
    /// A filter that lets everything through (add rules).
    pub fn new() -> Self {
        Filter::default()
    }

    /// Only records of these event types (`ce_type`).
    pub fn event_types<S: Into<String>>(mut self, types: impl IntoIterator<Item = S>) -> Self {
        self.event_types.get_or_insert_with(BTreeSet::new).extend(types.into_iter().map(Into::into));
        self
    }

    /// Only records whose header `name` (not a CloudEvents attribute) has this value.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Only records of these tenants (`ce_tenantid`).
    pub fn tenants<S: Into<String>>(mut self, tenants: impl IntoIterator<Item = S>) -> Self {
        self.tenants.get_or_insert_with(BTreeSet::new).extend(tenants.into_iter().map(Into::into));
        self
    }

    fn refuses(&self, ctx: &Context) -> Option<String> {
        let metadata = ctx.metadata();
        if let Some(types) = &self.event_types {
            if !types.contains(&metadata.event_type) {
                return Some(format!("filtered out: event type `{}`", metadata.event_type));
            }
        }
        if let Some(tenants) = &self.tenants {
            if !metadata.tenant_id.as_ref().is_some_and(|t| tenants.contains(t)) {
                return Some(format!("filtered out: tenant {:?}", metadata.tenant_id));
            }
        }
        for (name, value) in &self.headers {
            let found = metadata.other_headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v);
            if found != Some(value) {
                return Some(format!("filtered out: header `{name}`"));
            }
        }
        None
    }
}

impl HandleLayer for Filter {
    fn before(&self, ctx: &Context) -> Flow {
        match self.refuses(ctx) {
            Some(why) => Flow::skip(why),
            None => Flow::Continue,
        }
    }
}
