//! `#[handler]`: parse → validate → expand.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, LitStr, Type};

use crate::attr::{Errors, HandlerArgs};

/// How one argument after the event is obtained.
enum Extract {
    /// `&T`: `&Context` or a reference into app state.
    Ref(Type),
    /// `T: FromContext`.
    Value(Type),
}

/// What the handler takes.
enum Shape {
    Typed,
    CatchAll { topics: Vec<String> },
    Batch { max_size: usize, max_wait_ms: u64 },
}

struct Handler {
    item: ItemFn,
    shape: Shape,
    event: Type,
    args: Vec<Extract>,
    group: Option<String>,
    name: Option<String>,
    retries: Option<u32>,
    backoff_ms: Option<(u64, u64)>,
    ordering: Option<String>,
    concurrency: Option<usize>,
}

pub fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let item: ItemFn = match syn::parse2(item.clone()) {
        Ok(item) => item,
        Err(_) => {
            let e = syn::Error::new(Span::call_site(), "`#[handler]` applies to an `async fn`");
            let e = e.to_compile_error();
            return quote! { #item #e };
        }
    };
    let mut errors = Errors::default();
    let args = match syn::parse2::<HandlerArgs>(args) {
        Ok(args) => args,
        Err(e) => {
            errors.push(e);
            HandlerArgs::default()
        }
    };
    match validate(args, item.clone(), &mut errors) {
        Some(handler) if errors.to_compile_error().is_empty() => generate(&handler),
        _ => {
            let errors = errors.to_compile_error();
            quote! { #item #errors }
        }
    }
}

fn validate(attrs: HandlerArgs, item: ItemFn, errors: &mut Errors) -> Option<Handler> {
    let sig = &item.sig;
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new(sig.fn_token.span, "`#[handler]` functions must be `async fn`"));
    }
    if !sig.generics.params.is_empty() {
        errors.push(syn::Error::new(sig.generics.span(), "`#[handler]` functions cannot be generic"));
    }
    let group = attrs.group.map(|g| {
        let value = g.value();
        if value.trim().is_empty() {
            errors.push(syn::Error::new(g.span(), "`group` must not be empty"));
        }
        value
    });
    let name = attrs.name.map(|n| n.value());
    let retries = attrs.retries.and_then(|r| match r.base10_parse::<u32>() {
        Ok(n) => Some(n),
        Err(_) => {
            errors.push(syn::Error::new(r.span(), "`retries` is a whole number (retries after the first attempt)"));
            None
        }
    });
    let backoff_ms = attrs.backoff.and_then(|b| match parse_backoff(&b.value()) {
        Ok(range) => Some(range),
        Err(problem) => {
            errors.push(syn::Error::new(b.span(), problem));
            None
        }
    });
    let batch = attrs.batch.is_some();
    let ordering = attrs.ordering.and_then(|o| match o.value().as_str() {
        _ if batch => {
            errors.push(syn::Error::new(o.span(), "batch handlers are ordered per partition: remove `ordering`"));
            None
        }
        v @ ("key" | "partition" | "none") => Some(v.to_owned()),
        _ => {
            errors.push(syn::Error::new(o.span(), "`ordering` is \"key\", \"partition\" or \"none\""));
            None
        }
    });
    let concurrency = attrs.concurrency.and_then(|c| match c.base10_parse::<usize>() {
        Ok(n) if n >= 1 => Some(n),
        _ => {
            errors.push(syn::Error::new(c.span(), "`concurrency` is a whole number from 1"));
            None
        }
    });
    let mut inputs = sig.inputs.iter();
    if !batch {
        for (span, key) in [(attrs.max_size.as_ref().map(|m| m.span()), "max_size"), (attrs.max_wait.as_ref().map(|m| m.span()), "max_wait")] {
            if let Some(span) = span {
                errors.push(syn::Error::new(span, format!("`{key}` applies to batch handlers: add `batch`")));
            }
        }
    }
    let event = match inputs.next() {
        Some(FnArg::Typed(arg)) => match &*arg.ty {
            Type::Reference(r) => {
                errors.push(syn::Error::new(r.span(), "a handler takes its event by value, e.g. `event: UserCreated`"));
                None
            }
            ty if batch => match vec_element(ty) {
                Some(inner) => Some(inner),
                None => {
                    errors.push(syn::Error::new(ty.span(), "a batch handler takes its events as `Vec<E>`"));
                    None
                }
            },
            ty => Some(ty.clone()),
        },
        Some(FnArg::Receiver(r)) => {
            errors.push(syn::Error::new(r.span(), "`#[handler]` functions cannot take `self`"));
            None
        }
        None => {
            errors.push(syn::Error::new(
                sig.paren_token.span.join(),
                "a handler's first argument is the event it handles, e.g. `event: UserCreated`",
            ));
            None
        }
    };
    let args = inputs
        .filter_map(|arg| match arg {
            FnArg::Typed(arg) => Some(match &*arg.ty {
                Type::Reference(r) if r.mutability.is_none() => Extract::Ref((*r.elem).clone()),
                Type::Reference(r) => {
                    errors.push(syn::Error::new(r.span(), "handler arguments cannot be `&mut`"));
                    return None;
                }
                ty => Extract::Value(ty.clone()),
            }),
            FnArg::Receiver(r) => {
                errors.push(syn::Error::new(r.span(), "`#[handler]` functions cannot take `self`"));
                None
            }
        })
        .collect();
    let event = event?;
    let catch_all = is_any_event(&event);
    if let Some(span) = attrs.all {
        if !catch_all {
            errors.push(syn::Error::new(span, "a catch-all handler (`all`) takes `eventkit::AnyEvent` as its first argument"));
        }
    }
    let shape = if batch {
        if catch_all {
            errors.push(syn::Error::new(event.span(), "batch handlers take typed events: `Vec<E>` with `E` an integration event"));
        }
        let max_size = match &attrs.max_size {
            Some(m) => match m.base10_parse::<usize>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    errors.push(syn::Error::new(m.span(), "`max_size` is a whole number from 1"));
                    1
                }
            },
            None => 500,
        };
        let max_wait_ms = match &attrs.max_wait {
            Some(w) => match parse_duration_ms(&w.value()) {
                Ok(ms) => ms,
                Err(problem) => {
                    errors.push(syn::Error::new(w.span(), problem));
                    0
                }
            },
            None => 50,
        };
        Shape::Batch { max_size, max_wait_ms }
    } else if catch_all {
        Shape::CatchAll { topics: attrs.topics.as_ref().map(|(_, t)| t.iter().map(LitStr::value).collect()).unwrap_or_default() }
    } else {
        Shape::Typed
    };
    if let (Some((span, _)), false) = (&attrs.topics, matches!(shape, Shape::CatchAll { .. })) {
        errors.push(syn::Error::new(*span, "`topics` applies to catch-all handlers (taking `eventkit::AnyEvent`)"));
    }
    Some(Handler { shape, event, args, group, name, retries, backoff_ms, ordering, concurrency, item })
}

/// `Vec<T>` -> `T`.
fn vec_element(ty: &Type) -> Option<Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Vec" {
        return None;
    }
    match &last.arguments {
        syn::PathArguments::AngleBracketed(a) => match a.args.first()? {
            syn::GenericArgument::Type(t) => Some(t.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// Whether the type is (a path ending in) `AnyEvent`.
fn is_any_event(ty: &Type) -> bool {
    matches!(ty, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "AnyEvent"))
}

/// `"50ms"`, `"2s"`, `"1m"` in milliseconds.
fn parse_duration_ms(d: &str) -> Result<u64, String> {
    let usage = format!("expected a duration like `50ms`, `2s` or `1m`; got {d:?}");
    let d = d.trim();
    let split = d.find(|c: char| !c.is_ascii_digit()).unwrap_or(d.len());
    let (n, unit) = d.split_at(split);
    let n: u64 = n.parse().map_err(|_| usage.clone())?;
    match unit {
        "ms" => Ok(n),
        "s" => Ok(n * 1000),
        "m" => Ok(n * 60_000),
        _ => Err(usage),
    }
}

/// `"100ms..10s"`: first and longest delay, in milliseconds.
fn parse_backoff(text: &str) -> Result<(u64, u64), String> {
    let usage = "expected `backoff = \"FIRST..MAX\"` with durations like `100ms`, `2s`, `1m`";
    let (first, max) = text.split_once("..").ok_or_else(|| format!("{usage}; got {text:?}"))?;
    let ms = |d: &str| parse_duration_ms(d).map_err(|_| format!("{usage}; got {text:?}"));
    let (first, max) = (ms(first)?, ms(max)?);
    if first > max {
        return Err(format!("backoff {text:?}: the first delay is longer than the longest"));
    }
    Ok((first, max))
}

fn generate(handler: &Handler) -> TokenStream {
    let Handler { item, shape, event, args, group, name, retries, backoff_ms, ordering, concurrency } = handler;
    let ordering = match ordering.as_deref() {
        Some("key") => quote!(::core::option::Option::Some(::eventkit::Ordering::Key)),
        Some("partition") => quote!(::core::option::Option::Some(::eventkit::Ordering::Partition)),
        Some(_) => quote!(::core::option::Option::Some(::eventkit::Ordering::None)),
        None => quote!(::core::option::Option::None),
    };
    let concurrency = match concurrency {
        Some(n) => quote!(::core::option::Option::Some(#n)),
        None => quote!(::core::option::Option::None),
    };
    let batch = matches!(shape, Shape::Batch { .. });
    let retries = match retries {
        Some(n) => quote!(::core::option::Option::Some(#n)),
        None => quote!(::core::option::Option::None),
    };
    let backoff_ms = match backoff_ms {
        Some((a, b)) => quote!(::core::option::Option::Some((#a, #b))),
        None => quote!(::core::option::Option::None),
    };
    let fn_ident = &item.sig.ident;
    let fn_name = fn_ident.to_string();
    let name = match name {
        Some(n) => quote!(#n),
        None => quote!(::core::concat!(::core::module_path!(), "::", #fn_name)),
    };
    let group = match group {
        Some(g) => quote!(::core::option::Option::Some(#g)),
        None => quote!(::core::option::Option::None),
    };
    let idents: Vec<_> = (0..args.len()).map(|i| format_ident!("__arg{}", i)).collect();
    let (extract_ref, require_ref, base) = if batch {
        (quote!(extract_batch_ref), quote!(require_batch_ref), quote!(__ctx.first()))
    } else {
        (quote!(extract_ref), quote!(require_ref), quote!(&__ctx))
    };
    let extracts = args.iter().zip(&idents).map(|(arg, ident)| match arg {
        Extract::Ref(ty) => quote_spanned! {ty.span()=>
            let #ident = ::eventkit::__private::#extract_ref::<#ty>(&__ctx).map_err(::eventkit::__private::extract_failed)?;
        },
        Extract::Value(ty) => quote_spanned! {ty.span()=>
            let #ident = <#ty as ::eventkit::FromContext>::from_context(#base).map_err(::eventkit::__private::extract_failed)?;
        },
    });
    let requires = args.iter().map(|arg| match arg {
        Extract::Ref(ty) => quote_spanned! {ty.span()=> ::eventkit::__private::#require_ref::<#ty>(__requirements); },
        Extract::Value(ty) => quote_spanned! {ty.span()=> <#ty as ::eventkit::FromContext>::requirements(__requirements); },
    });
    let (ctx_type, decode, event_info, kind) = match shape {
        Shape::Typed => (
            quote!(::eventkit::Context),
            quote!(::eventkit::__private::decode_event::<#event>(&__ctx)?),
            quote!(::core::option::Option::Some(&<#event as ::eventkit::IntegrationEvent>::INFO)),
            quote!(::eventkit::HandlerKind::Typed(__eventkit_call)),
        ),
        Shape::CatchAll { topics } => (
            quote!(::eventkit::Context),
            quote!(::eventkit::__private::decode_any(&__ctx)?),
            quote!(::core::option::Option::None),
            quote!(::eventkit::HandlerKind::CatchAll { topics: &[#(#topics),*], call: __eventkit_call }),
        ),
        Shape::Batch { max_size, max_wait_ms } => (
            quote!(::eventkit::BatchContext),
            quote!(::eventkit::__private::decode_batch::<#event>(&__ctx)?),
            quote!(::core::option::Option::Some(&<#event as ::eventkit::IntegrationEvent>::INFO)),
            quote!(::eventkit::HandlerKind::Batch { max_size: #max_size, max_wait_ms: #max_wait_ms, call: __eventkit_call }),
        ),
    };
    let output = &item.sig.output;
    let output_check = quote_spanned! {output.span()=>
        ::eventkit::HandlerOutput::into_outcome(__output)
    };
    quote! {
        #item

        const _: () = {
            fn __eventkit_call(
                __ctx: ::std::sync::Arc<#ctx_type>,
            ) -> ::eventkit::__private::BoxFuture<'static, ::core::result::Result<(), ::eventkit::HandlerError>> {
                ::std::boxed::Box::pin(async move {
                    let __event = #decode;
                    #(#extracts)*
                    let __output = #fn_ident(__event, #(#idents),*).await;
                    #output_check
                })
            }
            fn __eventkit_requires(__requirements: &mut ::eventkit::Requirements) {
                #(#requires)*
            }
            ::eventkit::__private::inventory::submit! {
                ::eventkit::HandlerDescriptor {
                    name: #name,
                    group: #group,
                    event: #event_info,
                    kind: #kind,
                    retry: ::eventkit::RetryOverrides { retries: #retries, backoff_ms: #backoff_ms },
                    ordering: #ordering,
                    concurrency: #concurrency,
                    requires: __eventkit_requires,
                }
            }
        };
    }
}
