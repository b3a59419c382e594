//! `#[command]` and `#[command(returns = T)]`: an in-process command type.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{Ident, Item, LitStr, Token, Type};

use crate::attr::{unknown_argument, Errors};
use crate::krate;

#[derive(Default)]
struct Args {
    returns: Option<Type>,
    krate: Option<LitStr>,
}

const ARGS: &[&str] = &["returns", "crate"];

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args::default();
        while !input.is_empty() {
            let key: Ident = syn::ext::IdentExt::parse_any(input)?;
            input.parse::<Token![=]>()?;
            match key.to_string().as_str() {
                "returns" if args.returns.is_none() => args.returns = Some(input.parse()?),
                "crate" if args.krate.is_none() => args.krate = Some(input.parse()?),
                "returns" | "crate" => return Err(syn::Error::new(key.span(), format!("duplicate `{key}` argument"))),
                _ => return Err(unknown_argument(&key, ARGS)),
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(args)
    }
}

pub fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let parsed = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Struct(s)) => Some((s.ident, s.generics)),
        Ok(Item::Enum(e)) => Some((e.ident, e.generics)),
        _ => None,
    };
    let Some((ident, generics)) = parsed else {
        let e = syn::Error::new(Span::call_site(), "`#[command]` applies to a struct or an enum").to_compile_error();
        return quote! { #item #e };
    };
    let args: Args = crate::attr::parse_or_default(args, &mut errors);
    let k = krate::resolve(args.krate.as_ref(), &mut errors).path;
    if !generics.params.is_empty() {
        errors.push(syn::Error::new(generics.span(), "a command cannot be generic"));
        let e = errors.to_compile_error();
        return quote! { #item #e };
    }
    let output = args.returns.map(|t| quote!(#t)).unwrap_or_else(|| quote!(()));
    let name = ident.to_string();
    let errors = errors.to_compile_error();
    quote! {
        #item
        #errors
        const _: () = {
            impl #k::Command for #ident {
                type Output = #output;
                const INFO: #k::CommandInfo = #k::CommandInfo {
                    rust_name: #name,
                    module: ::core::module_path!(),
                    type_id: ::core::any::TypeId::of::<#ident>,
                    type_name: ::core::any::type_name::<#ident>,
                };
            }
            impl #k::HandlerEvent for #ident {
                const EVENT: ::core::option::Option<&'static #k::EventInfo> = ::core::option::Option::None;
                const COMMAND: ::core::option::Option<&'static #k::CommandInfo> = ::core::option::Option::Some(&<#ident as #k::Command>::INFO);
                type Returns = #k::__private::CommandReply<#output>;
                fn decode(__ctx: &#k::Context) -> ::core::result::Result<Self, #k::HandlerError> {
                    #k::__private::take_command::<#ident>(__ctx)
                }
            }
            #k::__private::inventory::submit! {
                #k::CommandDescriptor { info: &<#ident as #k::Command>::INFO }
            }
        };
    }
}
