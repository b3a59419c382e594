//! `#[handler]`: parse → validate → expand.
//!
//! Whether a handler is catch-all is decided by the type system, not by a name: its event
//! argument's `eventkit::HandlerEvent` impl (integration events are typed, `eventkit::AnyEvent`
//! is catch-all, under whatever name it is imported). So are the checks of `idempotent` and
//! `batch` handlers: whether an argument is an `InboxTx` is its `Extractor::INBOX_TX`, and
//! whether an idempotent handler returns events is its return type's
//! `eventkit::__private::IdempotentOutput` impl, both checked in the generated code (aliases of
//! `InboxTx` and of `Result<(), E>` count).

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, LitStr, Type};

use crate::attr::{Errors, HandlerArgs};
use crate::event::check_topic;
use crate::krate::{self, Krate};
use crate::span::call_over;

/// How one argument after the event is obtained.
enum Extract {
    /// `&T`: `&Context` or a reference into app state.
    Ref(Type),
    /// `T: FromContext`.
    Value(Type),
}

/// What the handler takes.
enum Shape {
    /// One event: typed or catch-all, decided by the event type.
    Single { topics: Option<(Span, Vec<String>)>, all: Option<Span> },
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
    /// `idempotent`: the handler takes an `InboxTx` and returns no events (checked by type).
    idempotent: Option<Span>,
    /// `layer = expr`: the handler's own layers, the first the outermost.
    layers: Vec<syn::Expr>,
    /// Where the consumer settings were given (a command handler refuses each, there).
    consumer_spans: Vec<(&'static str, Span)>,
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
    let args: HandlerArgs = crate::attr::parse_or_default(args, &mut errors);
    let krate = krate::resolve(args.krate.as_ref(), &mut errors);
    match validate(args, item.clone(), &mut errors) {
        Some(handler) if errors.to_compile_error().is_empty() => generate(&handler, &krate),
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
        errors.push(syn::Error::new_spanned(&sig.generics, "`#[handler]` functions cannot be generic"));
    }
    let consumer_spans: Vec<(&'static str, Span)> = [
        ("group", attrs.group.as_ref().map(|v| v.span())),
        ("retries", attrs.retries.as_ref().map(|v| v.span())),
        ("backoff", attrs.backoff.as_ref().map(|v| v.span())),
        ("ordering", attrs.ordering.as_ref().map(|v| v.span())),
        ("concurrency", attrs.concurrency.as_ref().map(|v| v.span())),
    ]
    .into_iter()
    .filter_map(|(name, span)| Some((name, span?)))
    .collect();
    let group = attrs.group.map(|g| {
        let value = g.value();
        if value.trim().is_empty() {
            errors.push(syn::Error::new(g.span(), "`group` must not be empty"));
        }
        value
    });
    let name = attrs.name.map(|n| {
        let value = n.value();
        if value.trim().is_empty() {
            errors.push(syn::Error::new(n.span(), "`name` must not be empty"));
        }
        value
    });
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
                errors.push(syn::Error::new_spanned(r, "a handler takes its event by value, e.g. `event: UserCreated`"));
                None
            }
            Type::ImplTrait(t) => {
                errors.push(syn::Error::new_spanned(t, "a handler's event is a named type, e.g. `event: UserCreated`, not `impl Trait`"));
                None
            }
            ty if batch => match vec_element(ty) {
                Some(inner) => Some(inner),
                None => {
                    errors.push(syn::Error::new_spanned(ty, "a batch handler takes its events as `Vec<E>`"));
                    None
                }
            },
            ty => Some(ty.clone()),
        },
        Some(FnArg::Receiver(r)) => {
            errors.push(syn::Error::new_spanned(r, "`#[handler]` goes on a free function, not on a method: move it out of the `impl` block"));
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
    let args: Vec<Extract> = inputs.filter_map(|arg| extractor(arg, errors)).collect();
    // Whether an argument is an `InboxTx` is decided by type in the generated code; only a handler
    // without any by-value argument is known here to take none.
    if let Some(span) = attrs.idempotent {
        if !args.iter().any(|a| matches!(a, Extract::Value(_))) {
            errors.push(syn::Error::new(span, IDEMPOTENT_WITHOUT_INBOX));
        }
    }
    let event = event?;
    if let Some((span, topics)) = &attrs.topics {
        if batch {
            errors.push(syn::Error::new(*span, "`topics` applies to catch-all handlers (taking `eventkit::AnyEvent`)"));
        }
        for t in topics {
            if let Err(problem) = check_topic(&t.value()) {
                errors.push(syn::Error::new(t.span(), problem));
            }
        }
    }
    if let (Some(span), true) = (attrs.all, batch) {
        errors.push(syn::Error::new(span, "batch handlers take typed events: `Vec<E>` with `E` an integration event"));
    }
    let shape = if batch {
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
    } else {
        Shape::Single { topics: attrs.topics.map(|(span, t)| (span, t.iter().map(LitStr::value).collect())), all: attrs.all }
    };
    Some(Handler { shape, event, args, group, name, retries, backoff_ms, ordering, concurrency, idempotent: attrs.idempotent, layers: attrs.layers, consumer_spans, item })
}

const IDEMPOTENT_WITHOUT_INBOX: &str = "an `idempotent` handler takes an `InboxTx<Sqlite>` (or `InboxTx<Postgres>`) argument: the transaction that records the event as handled; do the handler's writes in it and commit it";

const BATCH_WITH_INBOX: &str = "a batch handler cannot take an `InboxTx`: the inbox records one event per transaction (take the events one at a time, or record them with `Inbox::begin` per event)";

/// An argument after the event: `&T` or a `FromContext` value.
fn extractor(arg: &FnArg, errors: &mut Errors) -> Option<Extract> {
    let arg = match arg {
        FnArg::Typed(arg) => arg,
        FnArg::Receiver(r) => {
            errors.push(syn::Error::new_spanned(r, "`#[handler]` goes on a free function, not on a method: move it out of the `impl` block"));
            return None;
        }
    };
    match &*arg.ty {
        Type::Reference(r) if r.mutability.is_some() => {
            errors.push(syn::Error::new_spanned(r, "handler arguments cannot be `&mut`: take `&T` and use interior mutability (a `Mutex`, an atomic) for shared state"));
            None
        }
        Type::Reference(r) if matches!(&*r.elem, Type::Slice(_) | Type::TraitObject(_)) || is_path(&r.elem, "str") => {
            errors.push(syn::Error::new_spanned(
                r,
                "this cannot be a handler argument: arguments after the event are `&Context`, app state (`&T` or `State<T>` for a type `T` registered with `App::builder().state(..)`), or a `FromContext` extractor",
            ));
            None
        }
        Type::Reference(r) if last_segment(&r.elem).is_some_and(|s| s == "State") => {
            errors.push(syn::Error::new_spanned(r, "take app state as `State<T>` or as `&T`, not `&State<T>`"));
            None
        }
        Type::Reference(r) => Some(Extract::Ref((*r.elem).clone())),
        Type::ImplTrait(t) => {
            errors.push(syn::Error::new_spanned(t, "handler arguments are named types, not `impl Trait`"));
            None
        }
        ty => Some(Extract::Value(ty.clone())),
    }
}

fn last_segment(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    }
}

fn is_path(ty: &Type, name: &str) -> bool {
    matches!(ty, Type::Path(p) if p.qself.is_none() && p.path.is_ident(name))
}

/// Whether a type mentions `impl Trait` (and so cannot be named outside its signature).
fn mentions_impl(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|t| match t {
        proc_macro2::TokenTree::Ident(i) => i == "impl",
        proc_macro2::TokenTree::Group(g) => mentions_impl(g.stream()),
        _ => false,
    })
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

/// `"50ms"`, `"2s"`, `"1m"` in milliseconds; at most about 24 days.
pub fn parse_duration_ms(d: &str) -> Result<u64, String> {
    const MAX_MS: u64 = i32::MAX as u64;
    let usage = format!("expected a duration like `50ms`, `2s` or `1m`; got {d:?}");
    let d = d.trim();
    let split = d.find(|c: char| !c.is_ascii_digit()).unwrap_or(d.len());
    let (n, unit) = d.split_at(split);
    if n.is_empty() {
        return Err(usage);
    }
    let too_long = || format!("{d:?} is too long: at most {MAX_MS} ms (about 24 days)");
    let n: u64 = n.parse().map_err(|_| too_long())?;
    let factor = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        _ => return Err(usage),
    };
    n.checked_mul(factor).filter(|ms| *ms <= MAX_MS).ok_or_else(too_long)
}

/// `"100ms..10s"`: first and longest delay, in milliseconds.
fn parse_backoff(text: &str) -> Result<(u64, u64), String> {
    let usage = "expected `backoff = \"FIRST..MAX\"` with durations like `100ms`, `2s`, `1m`";
    let (first, max) = text.split_once("..").ok_or_else(|| format!("{usage}; got {text:?}"))?;
    let ms = |d: &str| match parse_duration_ms(d) {
        Err(e) if e.contains("too long") => Err(e),
        other => other.map_err(|_| format!("{usage}; got {text:?}")),
    };
    let (first, max) = (ms(first)?, ms(max)?);
    if first > max {
        return Err(format!("backoff {text:?}: the first delay is longer than the longest"));
    }
    Ok((first, max))
}

fn generate(handler: &Handler, krate: &Krate) -> TokenStream {
    let Handler { item, shape, event, args, group, name, retries, backoff_ms, ordering, concurrency, idempotent, layers, consumer_spans } = handler;
    let k = &krate.path;
    let batch = matches!(shape, Shape::Batch { .. });
    let some = |t: TokenStream| quote!(::core::option::Option::Some(#t));
    let none = quote!(::core::option::Option::None);
    let retries = retries.map(|n| some(quote!(#n))).unwrap_or_else(|| none.clone());
    let backoff_ms = backoff_ms.map(|(a, b)| some(quote!((#a, #b)))).unwrap_or_else(|| none.clone());
    let ordering = match ordering.as_deref() {
        Some("key") => some(quote!(#k::Ordering::Key)),
        Some("partition") => some(quote!(#k::Ordering::Partition)),
        Some(_) => some(quote!(#k::Ordering::None)),
        None => none.clone(),
    };
    let concurrency = concurrency.map(|n| some(quote!(#n))).unwrap_or_else(|| none.clone());
    let fn_ident = &item.sig.ident;
    let fn_name = fn_ident.to_string();
    let name = match name {
        Some(n) => quote!(#n),
        None => quote!(::core::concat!(::core::module_path!(), "::", #fn_name)),
    };
    let group = group.as_ref().map(|g| some(quote!(#g))).unwrap_or_else(|| none.clone());
    let idents: Vec<_> = (0..args.len()).map(|i| format_ident!("__arg{}", i)).collect();
    let (extract_ref, require_ref, base) = if batch {
        (quote!(extract_batch_ref), quote!(require_batch_ref), quote!(__ctx.first()))
    } else {
        (quote!(extract_ref), quote!(require_ref), quote!(&__ctx))
    };
    let extracts = args.iter().zip(&idents).map(|(arg, ident)| match arg {
        Extract::Ref(ty) => quote_spanned! {ty.span()=>
            let #ident = #k::__private::#extract_ref::<#ty>(&__ctx).map_err(#k::__private::extract_failed)?;
        },
        Extract::Value(ty) => quote_spanned! {ty.span()=>
            let #ident = match <#ty as #k::Extractor>::extract(#base).await.map_err(#k::__private::extract_failed)? {
                #k::Extracted::Value(__value) => __value,
                // The argument says the handler is not to run (the inbox saw the event).
                #k::Extracted::Skip => return ::core::result::Result::Ok(#k::Cascade::new()),
            };
        },
    });
    let requires = args.iter().map(|arg| match arg {
        Extract::Ref(ty) => quote_spanned! {ty.span()=> #k::__private::#require_ref::<#ty>(__requirements); },
        Extract::Value(ty) => quote_spanned! {ty.span()=> <#ty as #k::Extractor>::requirements(__requirements); },
    });
    // The handler's layers: its own (`layer = ..`, the first the outermost), then those its
    // arguments bring (an `InboxTx` brings the inbox), innermost.
    let own_layers = layers.iter().map(|expr| {
        quote_spanned! {expr.span()=> __layers.push(#k::__private::layer(#expr)); }
    });
    let argument_layers = args.iter().filter_map(|arg| match arg {
        Extract::Value(ty) => Some(quote_spanned! {ty.span()=> __layers.extend(<#ty as #k::Extractor>::layer()); }),
        Extract::Ref(_) => None,
    });
    let handler_event = quote_spanned!(event.span()=> <#event as #k::HandlerEvent>);
    let (ctx_type, decode, event_info, kind, checks) = match shape {
        Shape::Single { topics, all } => {
            let topic_list = topics.iter().flat_map(|(_, t)| t.iter());
            let mut checks = TokenStream::new();
            if let Some(span) = all {
                checks.extend(quote_spanned! {*span=>
                    const _: () = ::core::assert!(#handler_event::EVENT.is_none() && #handler_event::COMMAND.is_none(), "a catch-all handler (`all`) takes `eventkit::AnyEvent` as its first argument");
                });
            }
            if let Some((span, _)) = topics {
                checks.extend(quote_spanned! {*span=>
                    const _: () = ::core::assert!(#handler_event::EVENT.is_none() && #handler_event::COMMAND.is_none(), "`topics` applies to catch-all handlers (taking `eventkit::AnyEvent`)");
                });
            }
            // Commands run where they are sent: consumer settings do not apply. Each is refused
            // on its value: that is the token to remove.
            for (name, span) in consumer_spans {
                let what = format!("a command handler takes no `{name}`: commands run where they are sent, not in a consumer group");
                checks.extend(quote_spanned! {*span=>
                    const _: () = ::core::assert!(#handler_event::COMMAND.is_none(), #what);
                });
            }
            (
                quote!(#k::Context),
                quote!(#handler_event::decode(&__ctx)?),
                quote!(#handler_event::EVENT),
                quote! {
                    if let ::core::option::Option::Some(__command) = #handler_event::COMMAND {
                        #k::HandlerKind::Command { command: __command, call: __eventkit_call }
                    } else if #handler_event::EVENT.is_none() {
                        #k::HandlerKind::CatchAll { topics: &[#(#topic_list),*], call: __eventkit_call }
                    } else {
                        #k::HandlerKind::Typed(__eventkit_call)
                    }
                },
                checks,
            )
        }
        Shape::Batch { max_size, max_wait_ms } => (
            quote!(#k::BatchContext),
            quote_spanned!(event.span()=> #k::__private::decode_batch::<#event>(&__ctx)?),
            quote_spanned!(event.span()=> ::core::option::Option::Some(&<#event as #k::IntegrationEvent>::INFO)),
            quote!(#k::HandlerKind::Batch { max_size: #max_size, max_wait_ms: #max_wait_ms, call: __eventkit_call }),
            TokenStream::new(),
        ),
    };
    let output = &item.sig.output;
    let returns = match shape {
        Shape::Single { .. } => quote!(<#handler_event::Returns>),
        Shape::Batch { .. } => quote!(<()>),
    };
    // On the return type itself (the arrow's span is the gap before it on stable).
    let output_span = match output {
        syn::ReturnType::Type(_, ty) => ty.span(),
        syn::ReturnType::Default => item.sig.ident.span(),
    };
    let output_check = quote_spanned! {output_span=>
        #k::HandlerOutput::#returns::into_outcome(__output)
    };
    // `idempotent` and `batch` checks, by type: an alias of `InboxTx` or of `Result<(), E>` counts.
    let mut arg_checks = TokenStream::new();
    let mut output_value_check = TokenStream::new();
    let inbox_tx = |ty: &Type| quote_spanned!(ty.span()=> <#ty as #k::Extractor>::INBOX_TX);
    let values: Vec<&Type> = args.iter().filter_map(|a| match a { Extract::Value(ty) => Some(ty), Extract::Ref(_) => None }).collect();
    if batch {
        for ty in &values {
            let is_inbox = inbox_tx(ty);
            let assert = call_over(ty, quote!(::core::assert!), quote!(!#is_inbox, #BATCH_WITH_INBOX));
            arg_checks.extend(quote_spanned!(ty.span()=> const _: () = #assert;));
        }
    }
    if let Some(span) = idempotent {
        // Without any by-value argument the macro reported it already.
        if !values.is_empty() {
            let is_inbox = values.iter().map(|ty| inbox_tx(ty));
            arg_checks.extend(quote_spanned! {*span=>
                const _: () = ::core::assert!(false #(|| #is_inbox)*, #IDEMPOTENT_WITHOUT_INBOX);
            });
        }
        match output {
            syn::ReturnType::Default => {}
            // The trait bound is the check, spanned on the return type.
            syn::ReturnType::Type(_, ty) if !mentions_impl(ty.to_token_stream()) => arg_checks.extend(quote_spanned! {ty.span()=>
                const _: () = <#ty as #k::__private::IdempotentOutput>::OK;
            }),
            // `impl Trait` cannot be named here: the output value is checked, spanned on its type.
            syn::ReturnType::Type(_, ty) => {
                let output = call_over(ty, quote!(::core::convert::identity), quote!(&__output));
                output_value_check = quote_spanned!(ty.span()=> #k::__private::idempotent_output(#output););
            }
        }
    }
    quote! {
        #item

        const _: () = {
            fn __eventkit_call(
                __ctx: ::std::sync::Arc<#ctx_type>,
            ) -> #k::__private::BoxFuture<'static, ::core::result::Result<#k::Cascade, #k::HandlerError>> {
                ::std::boxed::Box::pin(async move {
                    let __event = #decode;
                    #(#extracts)*
                    let __output = #fn_ident(__event, #(#idents),*).await;
                    #output_value_check
                    #output_check
                })
            }
            fn __eventkit_requires(__requirements: &mut #k::Requirements) {
                #(#requires)*
            }
            fn __eventkit_layers() -> ::std::vec::Vec<::std::sync::Arc<dyn #k::layer::HandleLayer>> {
                let mut __layers: ::std::vec::Vec<::std::sync::Arc<dyn #k::layer::HandleLayer>> = ::std::vec::Vec::new();
                #(#own_layers)*
                #(#argument_layers)*
                __layers
            }
            #checks
            #arg_checks
            #k::__private::inventory::submit! {
                #k::HandlerDescriptor {
                    name: #name,
                    group: #group,
                    event: #event_info,
                    kind: #kind,
                    retry: #k::RetryOverrides { retries: #retries, backoff_ms: #backoff_ms },
                    ordering: #ordering,
                    concurrency: #concurrency,
                    requires: __eventkit_requires,
                    layers: __eventkit_layers,
                }
            }
        };
    }
}
