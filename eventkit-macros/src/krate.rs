//! The path generated code uses for the `eventkit` crate: `crate = "..."` when given (for
//! facade crates that re-export eventkit), else the name the user's Cargo.toml gives it
//! (`ek = { package = "eventkit-kafka" }` makes it `::ek`), else `::eventkit`.
//!
//! The package is `eventkit-kafka` and its library `eventkit`: a plain `eventkit-kafka = "0.1"`
//! dependency is `::eventkit` in code, although Cargo.toml spells it `eventkit_kafka`. (The one
//! rename this cannot tell apart, `eventkit_kafka = { package = "eventkit-kafka" }`, needs
//! `crate = "eventkit_kafka"`.)

use proc_macro2::{Span, TokenStream};
use proc_macro_crate::{crate_name, FoundCrate};
use quote::{quote, ToTokens};
use syn::LitStr;

use crate::attr::Errors;

/// The path, as tokens and as text (serde's `crate = "..."` takes text).
pub struct Krate {
    pub path: TokenStream,
    pub text: String,
}

pub fn resolve(explicit: Option<&LitStr>, errors: &mut Errors) -> Krate {
    if let Some(lit) = explicit {
        match lit.parse::<syn::Path>() {
            Ok(path) => {
                let text = path.to_token_stream().to_string().replace(' ', "");
                return Krate { path: path.into_token_stream(), text };
            }
            Err(_) => errors.push(syn::Error::new(lit.span(), "`crate` is a path to the eventkit crate, e.g. `crate = \"my_facade::eventkit\"`")),
        }
    }
    match crate_name("eventkit-kafka") {
        Ok(FoundCrate::Name(name)) if name != "eventkit" && name != "eventkit_kafka" => {
            let ident = syn::Ident::new(&name, Span::call_site());
            Krate { path: quote!(::#ident), text: format!("::{name}") }
        }
        // Inside eventkit's own tests, benches and examples the crate is `eventkit` too.
        _ => Krate { path: quote!(::eventkit), text: "::eventkit".to_owned() },
    }
}
