//! `#[integration_event]`: parse → validate → expand.

use heck::ToSnakeCase;
use proc_macro2::TokenStream;
use quote::quote;
use syn::spanned::Spanned;
use syn::{Fields, ItemStruct};

use crate::attr::{Errors, EventArgs};

/// What validation leaves for expansion: plain values, never raw attributes.
struct Event {
    item: ItemStruct,
    event_type: String,
    topic: String,
    version: u32,
    key: Option<syn::Ident>,
    format: Option<syn::Ident>,
}

pub fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let item: ItemStruct = match syn::parse2(item.clone()) {
        Ok(item) => item,
        Err(_) => {
            let e = syn::Error::new(
                proc_macro2::Span::call_site(),
                "`#[integration_event]` applies to a struct with named fields",
            );
            let e = e.to_compile_error();
            return quote! { #item #e };
        }
    };
    let mut errors = Errors::default();
    let args = match syn::parse2::<EventArgs>(args) {
        Ok(args) => args,
        Err(e) => {
            errors.push(e);
            EventArgs::default()
        }
    };
    let event = validate(args, item, &mut errors);
    let tokens = generate(&event);
    let errors = errors.to_compile_error();
    quote! { #tokens #errors }
}

fn validate(args: EventArgs, item: ItemStruct, errors: &mut Errors) -> Event {
    let name = item.ident.to_string();
    if !item.generics.params.is_empty() {
        errors.push(syn::Error::new(item.generics.span(), "integration events cannot be generic"));
    }
    let field_names: Vec<String> = match &item.fields {
        Fields::Named(fields) => fields.named.iter().filter_map(|f| f.ident.as_ref()).map(|i| i.to_string()).collect(),
        _ => {
            errors.push(syn::Error::new(item.ident.span(), "`#[integration_event]` applies to a struct with named fields"));
            Vec::new()
        }
    };
    let key = args.key.and_then(|key| {
        if field_names.iter().any(|f| key == f) {
            Some(key)
        } else {
            errors.push(syn::Error::new(
                key.span(),
                format!("`{name}` has no field `{}`; its fields are: {}", key, field_names.join(", ")),
            ));
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
    Event { item, event_type, topic, version, key, format }
}

/// Kafka's rule for topic names.
fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > 249 || topic == "." || topic == ".." {
        return Err(format!("invalid topic {topic:?}: 1 to 249 characters, not `.` or `..`"));
    }
    if let Some(c) = topic.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("invalid topic {topic:?}: `{c}` is not allowed (use ASCII letters, digits, `.`, `_`, `-`)"));
    }
    Ok(())
}

fn generate(event: &Event) -> TokenStream {
    let Event { item, event_type, topic, version, key, format } = event;
    let format = match format {
        Some(f) => quote!(::core::option::Option::Some(::eventkit::WireFormat::#f)),
        None => quote!(::core::option::Option::None),
    };
    let ident = &item.ident;
    let rust_name = ident.to_string();
    let (key_field, partition_key) = match key {
        Some(k) => {
            let name = k.to_string();
            (quote!(::core::option::Option::Some(#name)), quote!(::core::option::Option::Some(::std::string::ToString::to_string(&self.#k))))
        }
        None => (quote!(::core::option::Option::None), quote!(::core::option::Option::None)),
    };
    quote! {
        #[derive(::eventkit::__private::serde::Serialize, ::eventkit::__private::serde::Deserialize)]
        #[serde(crate = "::eventkit::__private::serde")]
        #item

        const _: () = {
            impl ::eventkit::IntegrationEvent for #ident {
                const INFO: ::eventkit::EventInfo = ::eventkit::EventInfo {
                    event_type: #event_type,
                    rust_name: #rust_name,
                    module: ::core::module_path!(),
                    topic: #topic,
                    version: #version,
                    key_field: #key_field,
                    format: #format,
                };
                fn partition_key(&self) -> ::core::option::Option<::std::string::String> {
                    #partition_key
                }
            }
            ::eventkit::__private::inventory::submit! {
                ::eventkit::EventDescriptor { info: &<#ident as ::eventkit::IntegrationEvent>::INFO }
            }
        };
    }
}
