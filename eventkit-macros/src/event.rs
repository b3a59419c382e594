//! `#[integration_event]`: parse → validate → expand.

use heck::{ToKebabCase, ToLowerCamelCase, ToShoutyKebabCase, ToShoutySnakeCase, ToSnakeCase, ToUpperCamelCase};
use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::punctuated::Punctuated;
use syn::ext::IdentExt;
use syn::{Fields, Item, ItemStruct, Meta, Token};

use crate::attr::{Errors, EventArgs};
use crate::krate::{self, Krate};

/// Topic settings: partitions, replication, retention (ms), cleanup policy, compression.
type Settings = (Option<i32>, Option<i16>, Option<i64>, Option<String>, Option<String>);

/// What validation leaves for expansion: plain values, never raw attributes.
struct Event {
    item: ItemStruct,
    event_type: String,
    topic: String,
    version: u32,
    /// The key field: its Rust name and its name in the event's JSON.
    key: Option<(syn::Ident, String)>,
    format: Option<syn::Ident>,
    settings: Settings,
    /// No impl can be generated (a generic struct): only the item and the errors.
    item_only: bool,
}

pub fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let item = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Struct(item)) => item,
        Ok(other) => {
            let span = match &other {
                Item::Enum(e) => e.enum_token.span,
                Item::Union(u) => u.union_token.span,
                Item::Fn(f) => f.sig.fn_token.span,
                _ => proc_macro2::Span::call_site(),
            };
            let e = syn::Error::new(span, "`#[integration_event]` applies to a struct with named fields").to_compile_error();
            return quote! { #item #e };
        }
        Err(_) => {
            let e = syn::Error::new(proc_macro2::Span::call_site(), "`#[integration_event]` applies to a struct with named fields").to_compile_error();
            return quote! { #item #e };
        }
    };
    let mut errors = Errors::default();
    let args: EventArgs = crate::attr::parse_or_default(args, &mut errors);
    let krate = krate::resolve(args.krate.as_ref(), &mut errors);
    let event = validate(args, item, &mut errors);
    let tokens = generate(&event, &krate);
    let errors = errors.to_compile_error();
    quote! { #tokens #errors }
}

fn validate(args: EventArgs, mut item: ItemStruct, errors: &mut Errors) -> Event {
    let name = item.ident.to_string();
    let mut item_only = false;
    if !item.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(&item.generics, "integration events cannot be generic"));
        item_only = true;
    }
    strip_serde_derives(&mut item, errors);
    let rename_all = serde_value(&item.attrs, "rename_all");
    let fields: Vec<(syn::Ident, String)> = match &item.fields {
        Fields::Named(fields) => fields
            .named
            .iter()
            .filter_map(|f| {
                let ident = f.ident.clone()?;
                let rust = ident.unraw().to_string();
                let json = match (serde_value(&f.attrs, "rename"), &rename_all) {
                    (Some(renamed), _) => renamed,
                    (None, Some(rule)) => apply_rename_all(rule, &rust),
                    (None, None) => rust,
                };
                Some((ident, json))
            })
            .collect(),
        _ => {
            errors.push(syn::Error::new(item.ident.span(), "`#[integration_event]` applies to a struct with named fields"));
            Vec::new()
        }
    };
    let key = args.key.and_then(|key| match fields.iter().find(|(f, _)| f.unraw() == key.unraw()) {
        // The user's own token: errors about the key (e.g. no `Display`) point at it.
        Some((_, json)) => Some((key, json.clone())),
        None => {
            let names: Vec<String> = fields.iter().map(|(f, _)| f.unraw().to_string()).collect();
            errors.push(syn::Error::new(key.span(), format!("`{name}` has no field `{}`; its fields are: {}", key.unraw(), names.join(", "))));
            None
        }
    });
    let topic = match args.topic {
        Some(topic) => {
            let value = topic.value();
            if let Err(problem) = check_topic(&value) {
                errors.push(syn::Error::new(topic.span(), problem));
            }
            value
        }
        None => format!("integration-events.{}", name.to_snake_case()),
    };
    let version = match args.version {
        Some(v) => match v.base10_parse::<u32>() {
            Ok(n) if n >= 1 => n,
            _ => {
                errors.push(syn::Error::new(v.span(), "`version` is a whole number from 1"));
                1
            }
        },
        None => 1,
    };
    let event_type = match args.event_type {
        Some(t) if t.value().trim().is_empty() => {
            errors.push(syn::Error::new(t.span(), "`type` must not be empty"));
            name
        }
        Some(t) => t.value(),
        None => name,
    };
    let format = args.format.and_then(|f| match f.value().as_str() {
        "binary" => Some(syn::Ident::new("Binary", f.span())),
        "structured" => Some(syn::Ident::new("Structured", f.span())),
        "legacy" => Some(syn::Ident::new("Legacy", f.span())),
        other => {
            errors.push(syn::Error::new(f.span(), format!("unknown format {other:?}: expected \"binary\", \"structured\" or \"legacy\"")));
            None
        }
    });
    let partitions = args.partitions.and_then(|p| match p.base10_parse::<i32>() {
        Ok(n) if n >= 1 => Some(n),
        _ => {
            errors.push(syn::Error::new(p.span(), "`partitions` is a whole number from 1"));
            None
        }
    });
    let replication = args.replication.and_then(|r| match r.base10_parse::<i16>() {
        Ok(n) if n >= 1 => Some(n),
        _ => {
            errors.push(syn::Error::new(r.span(), "`replication` is a whole number from 1 (the copies of each partition)"));
            None
        }
    });
    let retention = args.retention.and_then(|r| match parse_retention(&r.value()) {
        Ok(ms) => Some(ms),
        Err(e) => {
            errors.push(syn::Error::new(r.span(), e));
            None
        }
    });
    let one_of = |lit: Option<syn::LitStr>, name: &str, allowed: &[&str], errors: &mut Errors| {
        lit.and_then(|l| {
            let v = l.value();
            if allowed.contains(&v.as_str()) {
                Some(v)
            } else {
                errors.push(syn::Error::new(l.span(), format!("unknown {name} {v:?}: expected one of {}", allowed.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", "))));
                None
            }
        })
    };
    let cleanup_policy = one_of(args.cleanup_policy, "cleanup_policy", &["delete", "compact", "compact,delete"], errors);
    let compression = one_of(args.compression, "compression", &["none", "gzip", "snappy", "lz4", "zstd", "producer"], errors);
    Event { item, event_type, topic, version, key, format, settings: (partitions, replication, retention, cleanup_policy, compression), item_only }
}

/// `"7d"`, `"12h"`, `"30m"`, `"90s"` or `"forever"` in milliseconds (`-1`: forever).
fn parse_retention(text: &str) -> Result<i64, String> {
    let usage = format!("expected a retention like \"7d\", \"12h\", \"30m\" or \"forever\"; got {text:?}");
    let t = text.trim();
    if t == "forever" {
        return Ok(-1);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: i64 = n.parse().map_err(|_| usage.clone())?;
    let factor: i64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        _ => return Err(usage),
    };
    n.checked_mul(factor).filter(|ms| *ms > 0).ok_or(usage)
}

/// `#[integration_event]` derives serde itself: a `Serialize`/`Deserialize` in the item's own
/// derives would implement them twice. Each is reported and left out.
fn strip_serde_derives(item: &mut ItemStruct, errors: &mut Errors) {
    for attr in &mut item.attrs {
        if !attr.path().is_ident("derive") {
            continue;
        }
        let Ok(paths) = attr.parse_args_with(Punctuated::<syn::Path, Token![,]>::parse_terminated) else { continue };
        let is_serde = |p: &syn::Path| p.segments.last().is_some_and(|s| s.ident == "Serialize" || s.ident == "Deserialize");
        if !paths.iter().any(is_serde) {
            continue;
        }
        for p in paths.iter().filter(|p| is_serde(p)) {
            errors.push(syn::Error::new_spanned(p, "`#[integration_event]` derives `Serialize` and `Deserialize` itself: remove them from this derive"));
        }
        let kept: Vec<&syn::Path> = paths.iter().filter(|p| !is_serde(p)).collect();
        *attr = syn::parse_quote!(#[derive(#(#kept),*)]);
    }
}

/// The value of `#[serde(NAME = "...")]` among `attrs` (`rename(serialize = "...")` too).
fn serde_value(attrs: &[syn::Attribute], name: &str) -> Option<String> {
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        let Ok(metas) = attr.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated) else { continue };
        for meta in metas {
            match meta {
                Meta::NameValue(nv) if nv.path.is_ident(name) => {
                    if let syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) = nv.value {
                        return Some(s.value());
                    }
                }
                Meta::List(list) if list.path.is_ident(name) => {
                    let inner = list.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated).ok()?;
                    for m in inner {
                        if let Meta::NameValue(nv) = m {
                            if nv.path.is_ident("serialize") {
                                if let syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) = nv.value {
                                    return Some(s.value());
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    None
}

/// serde's `rename_all` rules, for a snake_case field name.
fn apply_rename_all(rule: &str, field: &str) -> String {
    match rule {
        "lowercase" => field.to_lowercase(),
        "UPPERCASE" => field.to_uppercase(),
        "PascalCase" => field.to_upper_camel_case(),
        "camelCase" => field.to_lower_camel_case(),
        "SCREAMING_SNAKE_CASE" => field.to_shouty_snake_case(),
        "kebab-case" => field.to_kebab_case(),
        "SCREAMING-KEBAB-CASE" => field.to_shouty_kebab_case(),
        _ => field.to_owned(),
    }
}

/// Kafka's rule for topic names.
pub fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > 249 || topic == "." || topic == ".." {
        return Err(format!("invalid topic {topic:?}: 1 to 249 characters, not `.` or `..`"));
    }
    if let Some(c) = topic.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("invalid topic {topic:?}: `{c}` is not allowed (use ASCII letters, digits, `.`, `_`, `-`)"));
    }
    Ok(())
}

fn generate(event: &Event, krate: &Krate) -> TokenStream {
    let Event { item, event_type, topic, version, key, format, settings, item_only } = event;
    let Krate { path: k, text } = krate;
    let serde_path = format!("{text}::__private::serde");
    let schemars_path = format!("{text}::__private::schemars");
    // The JSON Schema derive only where eventkit has its `asyncapi` feature: `__with_schema!`
    // (eventkit's) keeps or drops the bracketed attributes as that feature says.
    let derives = quote! {
        #[derive(#k::__private::serde::Serialize, #k::__private::serde::Deserialize)]
        #[serde(crate = #serde_path)]
    };
    let schema_derive = quote! {
        [#[derive(#k::__private::schemars::JsonSchema)] #[schemars(crate = #schemars_path)]]
    };
    let with_schema = |rest: TokenStream| quote! { #k::__with_schema! { #schema_derive #rest } };
    if *item_only {
        return with_schema(quote! { #derives #item });
    }
    let format = match format {
        Some(f) => quote!(::core::option::Option::Some(#k::WireFormat::#f)),
        None => quote!(::core::option::Option::None),
    };
    let ident = &item.ident;
    let rust_name = ident.to_string();
    let opt = |v: Option<TokenStream>| match v {
        Some(v) => quote!(::core::option::Option::Some(#v)),
        None => quote!(::core::option::Option::None),
    };
    let (partitions, replication, retention, cleanup, compression) = (
        opt(settings.0.map(|v| quote!(#v))),
        opt(settings.1.map(|v| quote!(#v))),
        opt(settings.2.map(|v| quote!(#v))),
        opt(settings.3.as_ref().map(|v| quote!(#v))),
        opt(settings.4.as_ref().map(|v| quote!(#v))),
    );
    let (key_field, partition_key) = match key {
        Some((field, json)) => {
            // Spanned on the `key = ...` token: a key type without `Display` is reported there.
            let text = quote_spanned!(field.span()=> #k::__private::key_text(&self.#field));
            (quote!(::core::option::Option::Some(#json)), quote!(::core::option::Option::Some(#text)))
        }
        None => (quote!(::core::option::Option::None), quote!(::core::option::Option::None)),
    };
    let item = with_schema(quote! { #derives #item });
    quote! {
        #item

        const _: () = {
            impl #k::IntegrationEvent for #ident {
                const INFO: #k::EventInfo = #k::EventInfo {
                    event_type: #event_type,
                    rust_name: #rust_name,
                    module: ::core::module_path!(),
                    topic: #topic,
                    version: #version,
                    key_field: #key_field,
                    format: #format,
                    type_id: ::core::any::TypeId::of::<#ident>,
                    type_name: ::core::any::type_name::<#ident>,
                    from_json: #k::__private::event_from_json::<#ident>,
                    schema: #k::__event_schema!(#ident),
                    settings: #k::TopicSettings {
                        partitions: #partitions,
                        replication: #replication,
                        retention_ms: #retention,
                        cleanup_policy: #cleanup,
                        compression: #compression,
                    },
                };
                fn partition_key(&self) -> ::core::option::Option<::std::string::String> {
                    #partition_key
                }
            }
            impl #k::IntoEvents for #ident {
                fn into_events(self, __cascade: &mut #k::Cascade) {
                    __cascade.push_event(self);
                }
            }
            #k::__private::inventory::submit! {
                #k::EventDescriptor { info: &<#ident as #k::IntegrationEvent>::INFO }
            }
        };
    }
}
