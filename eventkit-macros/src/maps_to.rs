//! `#[maps_to]`: a domain event mapped into integration events. Parse → validate → expand.
//!
//! ```text
//! #[maps_to(UserRegistered, AuditRecord(kind = "user.registered".into()), crate = "...")]
//! #[maps_to(UserUpdated, with = path::to::fn)]          // fn(&Domain) -> UserUpdated
//! struct Domain {
//!     #[map(to = user_id)] aggregate_id: Uuid,          // renamed, in every target
//!     #[map(AuditRecord, with = fmt_time)] at: Time,    // this target only: fmt_time(&self.at)
//!     #[map(skip)] secret: String,                      // in no target
//! }
//! ```
//! Fields go by name, through `Into` (a clone of the field). A target field that nothing fills
//! and a type that does not convert are rustc's errors, spanned on the target and the field.
//!
//! A field rule names its target by the type's name, the last segment of its path:
//! `#[map(Follow, skip)]` applies to `#[maps_to(ev::Follow)]` (a full path works too). When
//! the rule's path has a module part that differs from the target's, the generated code checks
//! that both name the same type.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, Ident, Item, LitStr, Path, Token};

use crate::attr::{unknown_argument, Errors};
use crate::krate::{self, Krate};

/// One target of `#[maps_to(...)]`.
struct Target {
    path: Path,
    /// `with = f`: the whole target from `f(&self)`.
    with: Option<Path>,
    /// `field = expr`: target fields set by an expression (`self` is the domain event).
    assigned: Vec<(Ident, Expr)>,
}

#[derive(Default)]
struct Args {
    targets: Vec<Target>,
    /// A top-level `with = f` (for a single target).
    with: Option<(Span, Path)>,
    krate: Option<LitStr>,
}

const ARGS: &[&str] = &["with", "crate"];
const TARGET_ARGS: &[&str] = &["with", "<field> = <expression>"];

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args::default();
        while !input.is_empty() {
            if input.peek(Token![crate]) && input.peek2(Token![=]) {
                let k: Token![crate] = input.parse()?;
                input.parse::<Token![=]>()?;
                if args.krate.is_some() {
                    return Err(syn::Error::new(k.span, "duplicate `crate` argument"));
                }
                args.krate = Some(input.parse()?);
            } else if input.peek(Ident) && input.peek2(Token![=]) {
                let key: Ident = input.parse()?;
                if key != "with" {
                    return Err(unknown_argument(&key, ARGS));
                }
                input.parse::<Token![=]>()?;
                if args.with.is_some() {
                    return Err(syn::Error::new(key.span(), "duplicate `with` argument"));
                }
                args.with = Some((key.span(), input.parse()?));
            } else {
                let path: Path = input.parse().map_err(|e| {
                    syn::Error::new(e.span(), "expected an integration event type, e.g. `#[maps_to(UserRegistered)]`")
                })?;
                let mut target = Target { path, with: None, assigned: Vec::new() };
                if input.peek(syn::token::Paren) {
                    let content;
                    syn::parenthesized!(content in input);
                    let items = Punctuated::<(Ident, Expr), Token![,]>::parse_terminated_with(&content, |p| {
                        let key = syn::ext::IdentExt::parse_any(p).map_err(|e| syn::Error::new(e.span(), format!("expected one of: {}", TARGET_ARGS.join(", "))))?;
                        p.parse::<Token![=]>()?;
                        Ok((key, p.parse()?))
                    })?;
                    for (key, value) in items {
                        if key == "with" {
                            let Expr::Path(p) = value else {
                                return Err(syn::Error::new(value.span(), "`with` takes a function path: `with = path::to::fn`"));
                            };
                            if target.with.replace(p.path).is_some() {
                                return Err(syn::Error::new(key.span(), "duplicate `with` argument"));
                            }
                        } else if target.assigned.iter().any(|(k, _)| *k == key) {
                            return Err(syn::Error::new(key.span(), format!("field `{key}` is set twice")));
                        } else {
                            target.assigned.push((key, value));
                        }
                    }
                }
                args.targets.push(target);
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(args)
    }
}

/// One `#[map(...)]` on a field.
struct FieldRule {
    /// The target it applies to (`None`: every target).
    target: Option<Path>,
    to: Option<Ident>,
    with: Option<Path>,
    skip: bool,
}

const FIELD_ARGS: &[&str] = &["to", "with", "skip"];

impl Parse for FieldRule {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut rule = FieldRule { target: None, to: None, with: None, skip: false };
        let mut first = true;
        while !input.is_empty() {
            if input.peek(Ident) && input.peek2(Token![=]) {
                let key: Ident = input.parse()?;
                input.parse::<Token![=]>()?;
                match key.to_string().as_str() {
                    "to" if rule.to.is_none() => rule.to = Some(input.parse()?),
                    "with" if rule.with.is_none() => rule.with = Some(input.parse()?),
                    "to" | "with" => return Err(syn::Error::new(key.span(), format!("duplicate `{key}` argument"))),
                    _ => return Err(unknown_argument(&key, FIELD_ARGS)),
                }
            } else {
                let path: Path = input.parse()?;
                if path.is_ident("skip") {
                    rule.skip = true;
                } else if first {
                    rule.target = Some(path);
                } else {
                    return Err(match path.get_ident() {
                        Some(ident) => unknown_argument(ident, FIELD_ARGS),
                        None => syn::Error::new(path.span(), "a target type comes first: `#[map(Target, to = name)]`"),
                    });
                }
            }
            first = false;
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        if rule.skip && (rule.to.is_some() || rule.with.is_some()) {
            return Err(syn::Error::new(input.span(), "`skip` leaves the field out: it takes no `to` or `with`"));
        }
        Ok(rule)
    }
}

struct Field {
    ident: Ident,
    rules: Vec<FieldRule>,
}

/// A field rule after validation: its target resolved to an index into the targets.
struct Rule {
    /// The target it applies to (`None`: every target).
    target: Option<usize>,
    to: Option<Ident>,
    with: Option<Path>,
    skip: bool,
}

/// A field with its validated rules.
struct MappedField {
    ident: Ident,
    rules: Vec<Rule>,
}

/// A field rule's target path that is not written as in `#[maps_to(...)]`: the generated code
/// checks that it names the same type as the target it was matched to by name.
struct SameType {
    rule: Path,
    target: usize,
}

fn same(a: &Path, b: &Path) -> bool {
    a.to_token_stream().to_string() == b.to_token_stream().to_string()
}

/// The type name of a path: its last segment's identifier.
fn type_name(path: &Path) -> Option<&Ident> {
    path.segments.last().map(|s| &s.ident)
}

/// A path as written in source: `ev::Follow`, not `ev :: Follow`.
fn pretty(path: &Path) -> String {
    let mut text = String::new();
    if path.leading_colon.is_some() {
        text.push_str("::");
    }
    for (i, segment) in path.segments.iter().enumerate() {
        if i > 0 {
            text.push_str("::");
        }
        text.push_str(&segment.ident.to_string());
        if !segment.arguments.is_empty() {
            text.push_str(&segment.arguments.to_token_stream().to_string().replace(' ', ""));
        }
    }
    text
}

/// The target a field rule names: the one written the same way, else the one with the same type
/// name (the last path segment), e.g. `Follow` for `ev::Follow`.
fn resolve_target(rule: &Path, targets: &[Target]) -> Result<usize, syn::Error> {
    if let Some(i) = targets.iter().position(|t| same(&t.path, rule)) {
        return Ok(i);
    }
    let names = |indexes: &mut dyn Iterator<Item = usize>| indexes.map(|i| pretty(&targets[i].path)).collect::<Vec<_>>().join(", ");
    let named: Vec<usize> = (0..targets.len()).filter(|&i| type_name(&targets[i].path) == type_name(rule)).collect();
    match named[..] {
        [i] => Ok(i),
        [] => Err(syn::Error::new(
            rule.span(),
            format!("`{}` is not a target of this mapping (targets: {})", pretty(rule), names(&mut (0..targets.len()))),
        )),
        _ => Err(syn::Error::new(
            rule.span(),
            format!("`{}` names more than one target ({}): write the path of the one meant, as in `#[maps_to(...)]`", pretty(rule), names(&mut named.iter().copied())),
        )),
    }
}

pub fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let mut item = match syn::parse2::<Item>(item.clone()) {
        Ok(item @ (Item::Struct(_) | Item::Enum(_))) => item,
        Ok(_) | Err(_) => {
            let e = syn::Error::new(Span::call_site(), "`#[maps_to]` applies to a domain event: a struct or an enum").to_compile_error();
            return quote! { #item #e };
        }
    };
    let args: Args = crate::attr::parse_or_default(args, &mut errors);
    let krate = krate::resolve(args.krate.as_ref(), &mut errors);
    let (ident, generics) = match &item {
        Item::Struct(s) => (s.ident.clone(), s.generics.clone()),
        Item::Enum(e) => (e.ident.clone(), e.generics.clone()),
        _ => unreachable!(),
    };
    let fields = take_field_rules(&mut item, &mut errors);
    if !generics.params.is_empty() {
        errors.push(syn::Error::new(generics.span(), "a domain event with `#[maps_to]` cannot be generic"));
        let e = errors.to_compile_error();
        return quote! { #item #e };
    }
    // On an error the impls are still emitted, with dummy bodies, so that uses of the mapping
    // elsewhere do not add errors of their own.
    let tokens = validate(args, fields, &ident, &mut errors).map(|mapping| generate(&ident, &mapping, &krate, !errors.is_empty()));
    let errors = errors.to_compile_error();
    quote! { #item #tokens #errors }
}

/// Removes the `#[map(...)]` attributes from the fields (or reports them on an enum's).
fn take_field_rules(item: &mut Item, errors: &mut Errors) -> Option<Vec<Field>> {
    let take = |attrs: &mut Vec<syn::Attribute>, errors: &mut Errors| -> Vec<FieldRule> {
        let mut rules = Vec::new();
        attrs.retain(|a| {
            if !a.path().is_ident("map") {
                return true;
            }
            match a.parse_args::<FieldRule>() {
                Ok(rule) => rules.push(rule),
                Err(e) => errors.push(e),
            }
            false
        });
        rules
    };
    match item {
        Item::Struct(s) => match &mut s.fields {
            syn::Fields::Named(named) => Some(
                named
                    .named
                    .iter_mut()
                    .map(|f| Field { ident: f.ident.clone().expect("named"), rules: take(&mut f.attrs, errors) })
                    .collect(),
            ),
            other => {
                for f in other.iter_mut() {
                    if !take(&mut f.attrs, errors).is_empty() {
                        errors.push(syn::Error::new(f.span(), "`#[map]` applies to named fields"));
                    }
                }
                None
            }
        },
        Item::Enum(e) => {
            for f in e.variants.iter_mut().flat_map(|v| v.fields.iter_mut()) {
                if !take(&mut f.attrs, errors).is_empty() {
                    errors.push(syn::Error::new(f.span(), "`#[map]` applies to the fields of a struct; an enum maps with `with = path::to::fn`"));
                }
            }
            None
        }
        _ => None,
    }
}

/// The validated mapping: its targets, its fields (for a struct with named fields) with their
/// rules resolved to targets, and the rule paths whose type the generated code checks.
struct Mapping {
    targets: Vec<Target>,
    fields: Option<Vec<MappedField>>,
    same_types: Vec<SameType>,
}

/// Checks the targets and the field rules against each other. `None`: nothing to generate.
fn validate(args: Args, fields: Option<Vec<Field>>, ident: &Ident, errors: &mut Errors) -> Option<Mapping> {
    let Args { mut targets, with, .. } = args;
    if targets.is_empty() {
        errors.push(syn::Error::new(Span::call_site(), format!("`#[maps_to]` names the integration events `{ident}` maps to, e.g. `#[maps_to(UserRegistered)]`")));
        return None;
    }
    if let Some((span, with)) = with {
        match targets.as_mut_slice() {
            [only] if only.with.is_none() => only.with = Some(with),
            [_] => errors.push(syn::Error::new(span, "`with` is given twice for the target")),
            _ => errors.push(syn::Error::new(span, "with several targets, give each its own: `#[maps_to(A(with = a_fn), B(with = b_fn))]`")),
        }
    }
    for (i, t) in targets.iter().enumerate() {
        if targets[..i].iter().any(|o| same(&o.path, &t.path)) {
            errors.push(syn::Error::new(t.path.span(), format!("`{}` is named twice", pretty(&t.path))));
        }
        if t.with.is_some() && !t.assigned.is_empty() {
            errors.push(syn::Error::new(t.assigned[0].0.span(), "`with` builds the whole target: it takes no field assignments"));
        }
        if t.with.is_none() && fields.is_none() {
            errors.push(syn::Error::new(
                t.path.span(),
                format!("field-by-field mapping needs a struct with named fields; give `{}` a function: `{}(with = path::to::fn)`", pretty(&t.path), pretty(&t.path)),
            ));
        }
    }
    let mut same_types = Vec::new();
    let fields = fields.map(|fields| {
        fields
            .into_iter()
            .map(|field| {
                let everywhere = field.rules.iter().filter(|r| r.target.is_none()).count();
                if everywhere > 1 {
                    errors.push(syn::Error::new(field.ident.span(), format!("field `{}` has two `#[map]` rules for every target; merge them", field.ident)));
                }
                let rules = field
                    .rules
                    .into_iter()
                    .filter_map(|FieldRule { target, to, with, skip }| {
                        let target = match target {
                            None => None,
                            Some(path) => match resolve_target(&path, &targets) {
                                Ok(i) => {
                                    // A bare name is only a name (it need not be in scope); a
                                    // path written differently must name the same type.
                                    if path.segments.len() > 1 && !same(&path, &targets[i].path) {
                                        same_types.push(SameType { rule: path, target: i });
                                    }
                                    Some(i)
                                }
                                Err(e) => {
                                    errors.push(e);
                                    return None;
                                }
                            },
                        };
                        Some(Rule { target, to, with, skip })
                    })
                    .collect();
                MappedField { ident: field.ident, rules }
            })
            .collect()
    });
    Some(Mapping { targets, fields, same_types })
}

fn generate(ident: &Ident, mapping: &Mapping, krate: &Krate, dummy: bool) -> TokenStream {
    let Mapping { targets, fields, same_types } = mapping;
    let k = &krate.path;
    let name = ident.to_string();
    let impls = targets.iter().enumerate().map(|(index, t)| {
        let target = &t.path;
        let body = match &t.with {
            _ if dummy => quote!(::core::unimplemented!()),
            Some(with) => quote_spanned!(with.span()=> #with(self)),
            None => {
                let assigned = t.assigned.iter().map(|(field, expr)| quote!(#field: #expr));
                let mapped = fields.iter().flatten().filter_map(|f| {
                    // A rule for this target wins over a rule for every target.
                    let rule = f.rules.iter().find(|r| r.target == Some(index)).or_else(|| f.rules.iter().find(|r| r.target.is_none()));
                    if rule.is_some_and(|r| r.skip) {
                        return None;
                    }
                    let source = &f.ident;
                    let to = rule.and_then(|r| r.to.clone()).unwrap_or_else(|| source.clone());
                    if t.assigned.iter().any(|(a, _)| *a == to) {
                        return None;
                    }
                    Some(match rule.and_then(|r| r.with.as_ref()) {
                        Some(with) => quote_spanned!(with.span()=> #to: #with(&self.#source)),
                        None => quote_spanned!(source.span()=> #to: ::core::convert::Into::into(::core::clone::Clone::clone(&self.#source))),
                    })
                });
                // The literal is spanned on the target: "missing field `x` in initializer of `T`".
                let literal = quote_spanned!(target.span()=> #target { #(#mapped,)* #(#assigned,)* });
                literal
            }
        };
        quote! {
            impl #k::MapsTo<#target> for #ident {
                fn map_to(&self) -> #target {
                    #body
                }
            }
        }
    });
    let paths: Vec<&Path> = targets.iter().map(|t| &t.path).collect();
    // `#[map(other::Follow)]` matched to `ev::Follow` by name: both must be one type.
    let same_types = same_types.iter().map(|SameType { rule, target }| {
        let target = &targets[*target].path;
        quote_spanned! {rule.span()=>
            const _: () = <#rule as #k::__private::SameTarget<#target>>::OK;
        }
    });
    quote! {
        const _: () = {
            #(#same_types)*
            #(#impls)*
            impl #k::DomainEvent for #ident {
                const TARGETS: &'static [&'static #k::EventInfo] = &[#(&<#paths as #k::IntegrationEvent>::INFO),*];
                fn integration_events(&self) -> #k::Cascade {
                    let mut __cascade = #k::Cascade::new();
                    #( #k::__private::map_into::<#ident, #paths>(self, &mut __cascade); )*
                    __cascade
                }
            }
            impl #k::IntoEvents for #ident {
                fn into_events(self, __cascade: &mut #k::Cascade) {
                    __cascade.append(<#ident as #k::DomainEvent>::integration_events(&self));
                }
            }
            #k::__private::inventory::submit! {
                #k::MappingDescriptor {
                    domain: #name,
                    module: ::core::module_path!(),
                    targets: <#ident as #k::DomainEvent>::TARGETS,
                }
            }
        };
    }
}
