//! `#[derive(Module)]` for Kiln's `kiln_nn::Module` trait.
//!
//! The derive walks a struct's named fields in declaration order. Every field
//! takes part through `kiln_nn::ModuleField` (parameters, submodules, and
//! `Option`/`Vec`/`Box` of them; plain numbers, flags and strings are ignored),
//! so a model is written as a struct of layers:
//!
//! ```ignore
//! #[derive(Clone, Module)]
//! struct Mlp {
//!     layers: Vec<nn::Linear>,
//!     #[module(skip)]
//!     name: SomeConfig,        // not a ModuleField: skip it
//!     #[module(training)]
//!     training: bool,          // this module's own train/eval flag
//! }
//! ```
//!
//! Field names become the dotted keys of parameters (`layers.0.weight`).

use proc_macro::TokenStream;
use quote::quote;
use syn::{parse_macro_input, Data, DeriveInput, Fields};

/// Implements `kiln_nn::Module` and `kiln_nn::ModuleField` for a struct with named fields.
#[proc_macro_derive(Module, attributes(module))]
pub fn derive_module(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let name = &input.ident;
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new_spanned(name, "#[derive(Module)] supports structs with named fields"));
    };
    let Fields::Named(fields) = &data.fields else {
        return Err(syn::Error::new_spanned(name, "#[derive(Module)] supports structs with named fields"));
    };
    let mut visited = Vec::new();
    let mut training = None;
    for f in &fields.named {
        let ident = f.ident.clone().expect("named field");
        let mut skip = false;
        let mut is_flag = false;
        for attr in &f.attrs {
            if !attr.path().is_ident("module") {
                continue;
            }
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("skip") {
                    skip = true;
                    Ok(())
                } else if meta.path.is_ident("training") {
                    is_flag = true;
                    Ok(())
                } else {
                    Err(meta.error("expected `skip` or `training`"))
                }
            })?;
        }
        if is_flag {
            if training.is_some() {
                return Err(syn::Error::new_spanned(&ident, "only one field may be #[module(training)]"));
            }
            training = Some(ident);
        } else if !skip {
            visited.push(ident);
        }
    }
    let keys: Vec<String> = visited.iter().map(|i| i.to_string().trim_start_matches("r#").to_string()).collect();
    let (impl_g, ty_g, where_g) = input.generics.split_for_impl();
    let flag_methods = training.map(|t| {
        quote! {
            fn set_training_flag(&mut self, training: bool) { self.#t = training; }
            fn is_training(&self) -> bool { self.#t }
        }
    });
    Ok(quote! {
        impl #impl_g ::kiln_nn::Module for #name #ty_g #where_g {
            fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &::kiln_nn::Param)) {
                #( ::kiln_nn::ModuleField::visit_params(&self.#visited, &::kiln_nn::join_key(prefix, #keys), f); )*
            }
            fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut ::kiln_nn::Param)) {
                #( ::kiln_nn::ModuleField::visit_params_mut(&mut self.#visited, &::kiln_nn::join_key(prefix, #keys), f); )*
            }
            fn visit_children(&self, prefix: &str, f: &mut dyn FnMut(&str, &dyn ::kiln_nn::Module)) {
                #( ::kiln_nn::ModuleField::visit_modules(&self.#visited, &::kiln_nn::join_key(prefix, #keys), f); )*
            }
            fn visit_children_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut dyn ::kiln_nn::Module)) {
                #( ::kiln_nn::ModuleField::visit_modules_mut(&mut self.#visited, &::kiln_nn::join_key(prefix, #keys), f); )*
            }
            #flag_methods
        }
        impl #impl_g ::kiln_nn::ModuleField for #name #ty_g #where_g {
            fn visit_params(&self, key: &str, f: &mut dyn FnMut(&str, &::kiln_nn::Param)) {
                ::kiln_nn::Module::visit_params(self, key, f)
            }
            fn visit_params_mut(&mut self, key: &str, f: &mut dyn FnMut(&str, &mut ::kiln_nn::Param)) {
                ::kiln_nn::Module::visit_params_mut(self, key, f)
            }
            fn visit_modules(&self, key: &str, f: &mut dyn FnMut(&str, &dyn ::kiln_nn::Module)) {
                f(key, self);
                ::kiln_nn::Module::visit_children(self, key, f)
            }
            fn visit_modules_mut(&mut self, key: &str, f: &mut dyn FnMut(&str, &mut dyn ::kiln_nn::Module)) {
                f(key, self);
                ::kiln_nn::Module::visit_children_mut(self, key, f)
            }
        }
    })
}
