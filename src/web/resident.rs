//! The resident's space: my data (view, correct), my mandates (revoke),
//! erase my data. My consents and receipts are in `consents.rs`, who saw
//! my data in `accesses.rs`.

use crate::error::ErrorCode;
use axum::body::Bytes;
use axum::extract::Path;
use maud::{Markup, html};
use serde_json::{Map, Value, json};

use super::{Ctx, Form, Lang, PageResult, csrf, date};
use crate::domain::Role;
use crate::domain::category::FieldType;
use crate::error::AppError;
use crate::http::session::CurrentUser;

pub(super) const RESIDENT: &[Role] = &[Role::Resident];

pub async fn overview(ctx: Ctx) -> PageResult {
    let _user = ctx.user_in(RESIDENT)?;
    let l = ctx.lang;
    let links = [
        (
            "/moi/donnees",
            l.t("Mes données", "My data"),
            l.t(
                "Voir et corriger ce que la collectivité garde pour vous.",
                "See and correct what the authority keeps for you.",
            ),
        ),
        (
            "/moi/consentements",
            l.t("Mes consentements", "My consents"),
            l.t(
                "Choisir, finalité par finalité, qui peut utiliser vos données.",
                "Choose, purpose by purpose, who may use your data.",
            ),
        ),
        (
            "/moi/acces",
            l.t("Qui a vu mes données", "Who saw my data"),
            l.t(
                "Chaque consultation, par qui, quand et pourquoi.",
                "Every access, by whom, when and why.",
            ),
        ),
        (
            "/moi/sources",
            l.t("Mes sources de données", "My data sources"),
            l.t(
                "Qui dépose des données à votre sujet, et vos autorisations.",
                "Who deposits data about you, and your authorisations.",
            ),
        ),
        (
            "/moi/mandats",
            l.t("Mes mandats", "My mandates"),
            l.t(
                "Les aidants qui peuvent agir pour vous ; révoquer un mandat.",
                "The aidants who may act for you; revoke a mandate.",
            ),
        ),
        (
            "/moi/recus",
            l.t("Mes reçus", "My receipts"),
            l.t(
                "Les preuves signées de chacun de vos choix.",
                "The signed proofs of each of your choices.",
            ),
        ),
        (
            "/moi/demandes",
            l.t("Mes demandes", "My requests"),
            l.t(
                "Vos demandes d'exercice de vos droits et leurs réponses.",
                "Your requests to exercise your rights, and their answers.",
            ),
        ),
        (
            "/moi/notifications",
            l.t("Mes notifications", "My notifications"),
            l.t(
                "Comment être prévenu(e) de ce qui se passe en votre nom.",
                "How you are told of what happens in your name.",
            ),
        ),
        (
            "/moi/effacement",
            l.t("Effacer mes données", "Erase my data"),
            l.t(
                "Tout effacer, définitivement.",
                "Erase everything, for good.",
            ),
        ),
    ];
    let body = html! {
        h1 { (l.t("Mon espace", "My space")) }
        ul.plain {
            @for (href, title, hint) in links {
                li.card { h2 { a href=(href) { (title) } } p { (hint) } }
            }
        }
        p { a href="/api/v1/me/export" download { (l.t("Télécharger toutes mes données (fichier JSON)", "Download all my data (JSON file)")) } }
    };
    Ok(ctx.page(l.t("Mon espace", "My space"), body))
}

/// The label of a field, from a small table of the register's fields.
pub fn field_label(name: &str, l: Lang) -> String {
    let (fr, en) = match name {
        "given_name" => ("Prénom", "Given name"),
        "family_name" => ("Nom", "Family name"),
        "birthdate" => ("Date de naissance", "Date of birth"),
        "gender" => ("Genre", "Gender"),
        "birthplace" => (
            "Commune de naissance (code INSEE)",
            "Birthplace (INSEE code)",
        ),
        "birthcountry" => ("Pays de naissance (code)", "Country of birth (code)"),
        "preferred_username" => ("Nom d'usage", "Name in use (e.g. married name)"),
        "email" => ("Adresse électronique", "E-mail address"),
        "phone" => ("Téléphone", "Phone"),
        "postal_address" => ("Adresse postale", "Postal address"),
        "commune_insee" => ("Commune (code INSEE)", "Municipality (INSEE code)"),
        "preferred_channel" => ("Moyen de contact préféré", "Preferred contact channel"),
        "size" => ("Nombre de personnes", "Number of people"),
        "adults" => ("Adultes", "Adults"),
        "children" => ("Enfants", "Children"),
        "single_parent" => ("Famille monoparentale", "Single-parent family"),
        "tenure" => ("Statut d'occupation", "Housing status"),
        "dwelling_type" => ("Type de logement", "Dwelling type"),
        "surface_m2" => ("Surface (m²)", "Floor area (m²)"),
        "construction_year" => ("Année de construction", "Year built"),
        "postal_code" => ("Code postal", "Postal code"),
        "heating" => ("Chauffage", "Heating"),
        "annual_kwh" => ("Consommation annuelle (kWh)", "Annual use (kWh)"),
        "energy_label" => ("Étiquette énergie", "Energy label"),
        "renovation_interest" => ("Intérêt pour une rénovation", "Interested in renovation"),
        "commute_mode" => ("Mode de déplacement domicile-travail", "Commute mode"),
        "commute_km" => ("Distance domicile-travail (km)", "Commute distance (km)"),
        "has_car" => ("Voiture au foyer", "Car in the household"),
        "work_commune_insee" => (
            "Commune de travail (code INSEE)",
            "Work municipality (INSEE code)",
        ),
        "annual_income_eur" => ("Revenu annuel (€)", "Annual income (€)"),
        "tax_shares" => ("Parts fiscales", "Tax shares"),
        "benefits" => ("Aides perçues", "Benefits received"),
        "school" => ("École", "School"),
        "diet" => ("Régime alimentaire", "Diet"),
        "allergens" => ("Allergènes", "Allergens"),
        "interests" => ("Centres d'intérêt", "Interests"),
        "newsletter" => ("Lettre d'information", "Newsletter"),
        "observations" => ("Observations transmises", "Observations sent"),
        "volunteer" => ("Bénévole", "Volunteer"),
        "chronic_conditions" => ("Maladies chroniques", "Chronic conditions"),
        "disability_recognised" => ("Handicap reconnu", "Recognised disability"),
        "general_practitioner_declared" => ("Médecin traitant déclaré", "GP declared"),
        "allergies" => ("Allergies", "Allergies"),
        other => return other.replace('_', " "),
    };
    l.t(fr, en).to_string()
}

/// The form controls of one category, filled with `current`.
/// The `autocomplete` token of a field of the resident's own data (WCAG
/// 1.3.5), so browsers fill in what they know about the person.
fn autocomplete(name: &str) -> &'static str {
    match name {
        "given_name" => "given-name",
        "family_name" => "family-name",
        "birthdate" => "bday",
        "gender" => "sex",
        "email" => "email",
        "phone" => "tel",
        "postal_address" => "street-address",
        "postal_code" => "postal-code",
        _ => "off",
    }
}

/// `own`: the form is the person's own data (an aidant filling a
/// resident's form must not be offered their own e-mail or phone).
/// `problem`: the field a refused form failed on, and why, shown next to it.
pub fn category_fields(
    ctx: &Ctx,
    category: &str,
    current: Option<&Map<String, Value>>,
    own: bool,
    problem: Option<(&str, &str)>,
) -> Markup {
    let l = ctx.lang;
    let Some(def) = ctx.state.categories.def_named(category) else {
        return html! {};
    };
    html! {
        @for (name, ty) in &def.fields {
            @let id = format!("{category}-{name}");
            @let ac = if own { autocomplete(name) } else { "off" };
            @let bad = problem.filter(|(f, _)| *f == name.as_str()).map(|(_, m)| m);
            @let invalid = bad.map(|_| "true");
            @let described = bad.map(|_| format!("{id}-erreur"));
            @let value = current.and_then(|c| c.get(name.as_str()));
            @let text = match value {
                Some(Value::String(v)) => v.clone(),
                Some(Value::Number(v)) => v.to_string(),
                Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "),
                _ => String::new(),
            };
            @match ty {
                FieldType::Boolean => {
                    label for=(id) { (field_label(name, l)) }
                    @if let Some(m) = bad { p.field-error #{ (id) "-erreur" } { (m) } }
                    select id=(id) name=(name) aria-invalid=[invalid] aria-describedby=[described.as_deref()] {
                        option value="" selected[value.is_none()] { (l.t("— non renseigné", "— not given")) }
                        option value="true" selected[value == Some(&Value::Bool(true))] { (l.t("oui", "yes")) }
                        option value="false" selected[value == Some(&Value::Bool(false))] { (l.t("non", "no")) }
                    }
                }
                FieldType::Enum { values } => {
                    label for=(id) { (field_label(name, l)) }
                    @if let Some(m) = bad { p.field-error #{ (id) "-erreur" } { (m) } }
                    select id=(id) name=(name) aria-invalid=[invalid] aria-describedby=[described.as_deref()] autocomplete=(ac) {
                        option value="" selected[text.is_empty()] { (l.t("— non renseigné", "— not given")) }
                        @for v in values {
                            option value=(v) selected[*v == text] { (enum_label(v, l)) }
                        }
                    }
                }
                FieldType::StringList { .. } => {
                    label for=(id) { (field_label(name, l)) span.hint { (l.t("Séparez les éléments par des virgules.", "Separate items with commas.")) } }
                    @if let Some(m) = bad { p.field-error #{ (id) "-erreur" } { (m) } }
                    input type="text" id=(id) name=(name) aria-invalid=[invalid] aria-describedby=[described.as_deref()] value=(text);
                }
                FieldType::Date => {
                    label for=(id) { (field_label(name, l)) }
                    @if let Some(m) = bad { p.field-error #{ (id) "-erreur" } { (m) } }
                    input type="date" id=(id) name=(name) aria-invalid=[invalid] aria-describedby=[described.as_deref()] value=(text) autocomplete=(ac);
                }
                FieldType::Integer { min, max } => {
                    label for=(id) { (field_label(name, l)) }
                    @if let Some(m) = bad { p.field-error #{ (id) "-erreur" } { (m) } }
                    input type="number" id=(id) name=(name) aria-invalid=[invalid] aria-describedby=[described.as_deref()] value=(text) min=(min) max=(max) inputmode="numeric";
                }
                FieldType::Email => {
                    label for=(id) { (field_label(name, l)) }
                    @if let Some(m) = bad { p.field-error #{ (id) "-erreur" } { (m) } }
                    input type="email" id=(id) name=(name) aria-invalid=[invalid] aria-describedby=[described.as_deref()] value=(text) autocomplete=(ac);
                }
                FieldType::Phone => {
                    label for=(id) { (field_label(name, l)) }
                    @if let Some(m) = bad { p.field-error #{ (id) "-erreur" } { (m) } }
                    input type="tel" id=(id) name=(name) aria-invalid=[invalid] aria-describedby=[described.as_deref()] value=(text) autocomplete=(ac);
                }
                FieldType::PostalCode => {
                    label for=(id) { (field_label(name, l)) }
                    @if let Some(m) = bad { p.field-error #{ (id) "-erreur" } { (m) } }
                    input type="text" id=(id) name=(name) aria-invalid=[invalid] aria-describedby=[described.as_deref()] value=(text) inputmode="numeric" maxlength="5" autocomplete=(ac);
                }
                FieldType::InseeCode => {
                    // Corsican codes hold letters (2A004): no numeric keypad.
                    label for=(id) { (field_label(name, l)) span.hint { (l.t("5 caractères, par exemple 31555 ou 2A004", "5 characters, e.g. 31555 or 2A004")) } }
                    @if let Some(m) = bad { p.field-error #{ (id) "-erreur" } { (m) } }
                    input type="text" id=(id) name=(name) aria-invalid=[invalid] aria-describedby=[described.as_deref()] value=(text) maxlength="5" autocomplete="off";
                }
                FieldType::String { max_len } => {
                    label for=(id) { (field_label(name, l)) }
                    @if let Some(m) = bad { p.field-error #{ (id) "-erreur" } { (m) } }
                    input type="text" id=(id) name=(name) aria-invalid=[invalid] aria-describedby=[described.as_deref()] value=(text) maxlength=(max_len) autocomplete=(ac);
                }
            }
        }
    }
}

/// The words for a choice of the register (codes stay in the data).
pub fn enum_label(v: &str, l: Lang) -> String {
    let (fr, en) = match v {
        "female" => ("femme", "woman"),
        "male" => ("homme", "man"),
        "other" => ("autre", "other"),
        "unspecified" => ("ne souhaite pas le dire", "prefer not to say"),
        "email" => ("courriel", "e-mail"),
        "phone" => ("téléphone", "phone"),
        "post" => ("courrier", "post"),
        "owner" => ("propriétaire", "owner"),
        "tenant" => ("locataire", "tenant"),
        "social_tenant" => ("locataire d'un logement social", "social-housing tenant"),
        "hosted" => ("hébergé gratuitement", "hosted free of charge"),
        "house" => ("maison", "house"),
        "flat" => ("appartement", "flat"),
        "electric" => ("électricité", "electricity"),
        "gas" => ("gaz", "gas"),
        "oil" => ("fioul", "heating oil"),
        "wood" => ("bois", "wood"),
        "heat_pump" => ("pompe à chaleur", "heat pump"),
        "district" => ("réseau de chaleur", "district heating"),
        "walk" => ("à pied", "on foot"),
        "bike" => ("vélo", "bike"),
        "bus" => ("bus", "bus"),
        "train" => ("train", "train"),
        "car" => ("voiture", "car"),
        "carpool" => ("covoiturage", "car sharing"),
        "none" => ("aucun", "none"),
        "standard" => ("standard", "standard"),
        "vegetarian" => ("végétarien", "vegetarian"),
        "no_pork" => ("sans porc", "no pork"),
        other => return other.replace('_', " "),
    };
    l.t(fr, en).to_string()
}

/// What a refused form typed, to show it again (raw text; yes/no as
/// booleans so the select keeps its choice).
pub fn posted_values(ctx: &Ctx, category: &str, form: &Form) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(def) = ctx.state.categories.def_named(category) {
        for (name, ty) in &def.fields {
            let Some(text) = form.text(name) else {
                continue;
            };
            let v = match (ty, text.as_str()) {
                (FieldType::Boolean, "true") => Value::Bool(true),
                (FieldType::Boolean, "false") => Value::Bool(false),
                _ => Value::String(text),
            };
            out.insert(name.clone(), v);
        }
    }
    out
}

/// A refused category form: the field at fault, when there is one, and why.
pub type FormError = (Option<String>, AppError);

/// The JSON object of a category from its posted form, checked as the vault
/// will check it: blank fields are left out, numbers and yes/no become JSON
/// numbers and booleans, lists are split on commas. A refusal names the
/// field in words, in the page's language (the vault's own message names
/// it by its code).
pub fn posted_record(ctx: &Ctx, category: &str, form: &Form) -> Result<Value, FormError> {
    let unknown = || (None, ErrorCode::UnknownCategory.into());
    let def = ctx
        .state
        .categories
        .def_named(category)
        .ok_or_else(unknown)?;
    let mut record = Map::new();
    for (name, ty) in &def.fields {
        let Some(text) = form.text(name) else {
            continue;
        };
        let unreadable = || (Some(name.clone()), invalid_field(name, ctx.lang));
        let value = match ty {
            FieldType::Boolean => match text.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(unreadable()),
            },
            FieldType::Integer { .. } => match text.parse::<i64>() {
                Ok(v) => json!(v),
                Err(_) => return Err(unreadable()),
            },
            FieldType::StringList { .. } => Value::Array(
                text.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(|x| Value::String(x.to_string()))
                    .collect(),
            ),
            _ => Value::String(text),
        };
        record.insert(name.clone(), value);
    }
    let record = Value::Object(record);
    let cat = ctx
        .state
        .categories
        .category(category)
        .map_err(|_| unknown())?;
    match ctx.state.categories.validate(&cat, &record) {
        Ok(_) => Ok(record),
        Err(crate::domain::category::RecordError::InvalidField { field, .. }) => {
            let e = invalid_field(&field, ctx.lang);
            Err((Some(field), e))
        }
        Err(crate::domain::category::RecordError::NotAnObject) => {
            Err((None, ErrorCode::InvalidRecord.into()))
        }
        Err(e) => Err((None, e.into())),
    }
}

/// The field named in words, in the page's language only (the detail
/// follows the message of the page's language).
fn invalid_field(name: &str, l: Lang) -> AppError {
    let label = field_label(name, l);
    ErrorCode::InvalidField.with(match l {
        Lang::Fr => format!("« {label} »"),
        Lang::En => format!("\"{label}\""),
    })
}

pub async fn data(ctx: Ctx) -> PageResult {
    let user = ctx.user_in(RESIDENT)?;
    render_data(&ctx, &user, None).await
}

/// A form the vault refused: its category, what was typed, the field at
/// fault and the message.
struct Refused<'a> {
    category: &'a str,
    typed: Map<String, Value>,
    field: Option<String>,
    error: AppError,
}

async fn render_data(ctx: &Ctx, user: &CurrentUser, refused: Option<Refused<'_>>) -> PageResult {
    let l = ctx.lang;
    let records = crate::service::data::my_data(&ctx.state, &ctx.caller(user))
        .await
        .map_err(|e| ctx.fail(e))?
        .value
        .records;
    let current = |c: &str| records.iter().find(|r| r.category == c).map(|r| &r.fields);
    let origin = |c: &str| {
        records
            .iter()
            .find(|r| r.category == c)
            .map(|r| (r.created_at, r.source.as_ref()))
    };
    let message = refused.as_ref().map(|r| r.error.message_in(l == Lang::Fr));
    let body = html! {
        h1 { (l.t("Mes données", "My data")) }
        @if let (Some(r), Some(m)) = (&refused, &message) {
            div.alert role="alert" {
                p { strong { (l.t("Rien n'a été enregistré. ", "Nothing was saved. ")) } (m) }
                @if let Some(f) = &r.field {
                    p { a href={ "#" (r.category) "-" (f) } { (l.t("Aller au champ à corriger", "Go to the field to correct")) } }
                }
                p.small { (l.t("Code de l'erreur : ", "Error code: ")) code { (r.error.code_and_status().0) } }
            }
        }
        p { (l.t("Voici ce que la collectivité garde pour vous, chiffré avec une clé qui vous est propre. Corrigez ce qui est faux : l'ancienne version est gardée dans l'historique, et les partenaires qui l'avaient reçue en sont informés.",
                  "Here is what the authority keeps for you, encrypted with a key of your own. Correct what is wrong: the previous version stays in the history, and partners who had received it are told.")) }
        p.small { (l.t("Pour votre sécurité, la session se ferme après 30 minutes sans activité : enregistrez une catégorie à la fois.",
                        "For your safety, the session closes after 30 idle minutes: save one category at a time.")) }
        @for (name, def) in ctx.state.categories.iter() {
            @let this = refused.as_ref().filter(|r| r.category == name);
            @let record = match this { Some(r) => Some(&r.typed), None => current(name) };
            @let problem = this.and_then(|r| r.field.as_deref().zip(message.as_deref()));
            section.card aria-labelledby={ "c-" (name) } {
                h2 #{ "c-" (name) } { (l.t(&def.label_fr, &def.label_en)) }
                @if def.special {
                    p.note { (l.t("Donnée de santé : elle n'est utilisée qu'avec votre consentement explicite.", "Health data: used only with your explicit consent.")) }
                }
                @if current(name).is_none() {
                    p { (l.t("Rien n'est enregistré.", "Nothing is stored.")) }
                }
                @if let Some((written, source)) = origin(name) {
                    p.small {
                        @if let Some(s) = source {
                            (l.t("Déposé par ", "Deposited by "))
                            strong { (ctx.state.sources.get(&s.id).map(|d| d.name(l == Lang::Fr).to_string()).unwrap_or_else(|| s.id.clone())) }
                            (l.t(" le ", " on ")) (super::date(written))
                            (l.t(" (observé le ", " (observed on ")) (super::date(s.observed_at)) ")."
                        } @else {
                            (l.t("Enregistré par vous ou un aidant le ", "Saved by you or an aidant on ")) (super::date(written)) "."
                        }
                    }
                }
                details open[this.is_some()] {
                    summary { (if current(name).is_some() { l.t("Voir et corriger", "See and correct") } else { l.t("Ajouter", "Add") }) }
                    form method="post" action={ "/moi/donnees/" (name) } {
                        (csrf(user))
                        (category_fields(ctx, name, record, true, problem))
                        p { button { (l.t("Enregistrer", "Save")) } }
                    }
                }
            }
        }
    };
    let title = if refused.is_some() {
        l.t(
            "Erreur : rien n'a été enregistré — Mes données",
            "Error: nothing was saved — My data",
        )
    } else {
        l.t("Mes données", "My data")
    };
    let status = if refused.is_some() {
        axum::http::StatusCode::UNPROCESSABLE_ENTITY
    } else {
        axum::http::StatusCode::OK
    };
    Ok(ctx.page_with(status, title, body))
}

pub async fn save_category(ctx: Ctx, Path(category): Path<String>, body: Bytes) -> PageResult {
    let form = Form::parse(&body);
    let user = ctx.form_user(RESIDENT, &form)?;
    let back = "/moi/donnees";
    let record = match posted_record(&ctx, &category, &form) {
        Ok(r) => r,
        Err((field, error)) => {
            // The same page again, with what was typed and the field at fault.
            let typed = posted_values(&ctx, &category, &form);
            return render_data(
                &ctx,
                &user,
                Some(Refused {
                    category: &category,
                    typed,
                    field,
                    error,
                }),
            )
            .await;
        }
    };
    let now = ctx.state.clock.now();
    crate::service::data::rectify_own(&ctx.state, &ctx.caller(&user), &category, &record, now)
        .await
        .map_err(|e| ctx.fail_at(e, back))?;
    Ok(ctx.done(back, "donnees"))
}

pub(super) fn state_label(state: &str, l: Lang) -> &'static str {
    match state {
        "given" => l.t("donné", "given"),
        "refused" => l.t("refusé", "refused"),
        "withdrawn" => l.t("retiré", "withdrawn"),
        "expired" => l.t("expiré", "expired"),
        "active" => l.t("en cours", "active"),
        "revoked" => l.t("révoqué", "revoked"),
        _ => l.t("inconnu", "unknown"),
    }
}

pub fn state_badge(state: &str, l: Lang) -> Markup {
    html! { span class={ "state state-" (state) } { (state_label(state, l)) } }
}

pub async fn mandates(ctx: Ctx) -> PageResult {
    let user = ctx.user_in(RESIDENT)?;
    let l = ctx.lang;
    let ms = crate::service::agents::my_mandates(&ctx.state, &ctx.caller(&user))
        .await
        .map_err(|e| ctx.fail(e))?
        .value
        .mandates;
    let body = html! {
        h1 { (l.t("Mes mandats", "My mandates")) }
        p { (l.t("Un mandat permet aux aidants d'une structure habilitée de faire certaines démarches à votre place. Vous pouvez le révoquer à tout moment.",
                  "A mandate lets the aidants of an authorised structure do some démarches for you. You can revoke it at any time.")) }
        @if ms.is_empty() { p { (l.t("Aucun mandat.", "No mandate.")) } }
        @for m in &ms {
            @let state = m.state.as_str();
            section.card {
                h2 { (m.structure_name) " " (state_badge(state, l)) }
                p { (l.t("Conclu le ", "Agreed on ")) (date(m.created_at)) (l.t(", valable jusqu'au ", ", valid until ")) (date(m.expires_at)) "." }
                ul {
                    @for d in &m.demarches {
                        li { span lang="fr" { (d.label_fr) } " " (state_badge(d.state.as_str(), l)) }
                    }
                }
                p { a href={ "/mandates/" (m.id) "/attestation" } { (l.t("Voir l'attestation", "See the attestation")) } }
                @if state == "active" {
                    form method="post" action={ "/moi/mandats/" (m.id) "/revocation" } {
                        (csrf(&user))
                        div.choice {
                            input type="checkbox" id={ "confirm-" (m.id) } name="confirm" value="yes" required;
                            label for={ "confirm-" (m.id) } { (l.t("Je veux que ces aidants ne puissent plus agir pour moi.", "I want these aidants to no longer act for me.")) }
                        }
                        button.danger { (l.t("Révoquer ce mandat", "Revoke this mandate")) }
                    }
                }
            }
        }
    };
    Ok(ctx.page(l.t("Mes mandats", "My mandates"), body))
}

pub async fn revoke(ctx: Ctx, Path(id): Path<String>, body: Bytes) -> PageResult {
    let form = Form::parse(&body);
    let user = ctx.form_user(RESIDENT, &form)?;
    if form.get("confirm") != Some("yes") {
        return Err(ctx.fail_at(ErrorCode::ConfirmationRequired.into(), "/moi/mandats"));
    }
    crate::service::agents::resident_revoke(
        &ctx.state,
        &ctx.caller(&user),
        // A malformed id names no mandate: answered as an unknown one.
        crate::domain::MandateId::parse(&id).ok().as_ref(),
        crate::service::agents::RevokeRequest::default(),
    )
    .await
    .map_err(|e| ctx.fail_at(e, "/moi/mandats"))?;
    Ok(ctx.done("/moi/mandats", "revoque"))
}

pub async fn erasure(ctx: Ctx) -> PageResult {
    let user = ctx.user_in(RESIDENT)?;
    let l = ctx.lang;
    let body = html! {
        h1 { (l.t("Effacer mes données", "Erase my data")) }
        div.alert {
            p { (l.t("L'effacement est définitif : la clé qui chiffre vos données est détruite, plus personne ne pourra les lire, pas même la collectivité. Les partenaires qui les avaient reçues en sont informés.",
                      "Erasure is final: the key that encrypts your data is destroyed, nobody can read it any more, not even the authority. Partners who had received it are told.")) }
            p { (l.t("Le journal garde seulement la trace, sans donnée personnelle, de ce qui a été fait.", "The log keeps only the trace, without personal data, of what was done.")) }
        }
        p { a href="/api/v1/me/export" download { (l.t("Télécharger d'abord une copie de mes données", "First download a copy of my data")) } }
        form method="post" action="/moi/effacement" {
            (csrf(&user))
            div.choice {
                input type="checkbox" id="confirm" name="confirm" value="yes" required;
                label for="confirm" { (l.t("Je comprends que l'effacement est définitif.", "I understand that erasure is final.")) }
            }
            p { button.danger { (l.t("Effacer toutes mes données", "Erase all my data")) } }
        }
    };
    Ok(ctx.page(l.t("Effacer mes données", "Erase my data"), body))
}

pub async fn erase(ctx: Ctx, body: Bytes) -> PageResult {
    let form = Form::parse(&body);
    let user = ctx.form_user(RESIDENT, &form)?;
    if form.get("confirm") != Some("yes") {
        return Err(ctx.fail_at(ErrorCode::ConfirmationRequired.into(), "/moi/effacement"));
    }
    let now = ctx.state.clock.now();
    crate::service::data::erase_own(&ctx.state, &ctx.caller(&user), now)
        .await
        .map_err(|e| ctx.fail_at(e, "/moi/effacement"))?;
    Ok(ctx.done("/", "efface"))
}

fn extension_reason(reason: &str, l: super::Lang) -> &'static str {
    match reason {
        "complexity" => l.t("la complexité de la demande", "the request's complexity"),
        "number_of_requests" => l.t("le nombre de demandes", "the number of requests"),
        _ => l.t("autre", "other"),
    }
}

/// The resident's rights requests: each one's state, deadline and history
/// (an extension with its reason, a refusal with its reason and the right
/// to complain to the CNIL). Where a notice about a request leads.
pub async fn requests(ctx: Ctx) -> PageResult {
    let user = ctx.user_in(RESIDENT)?;
    let l = ctx.lang;
    let caller = ctx.caller(&user);
    let now = ctx.state.clock.now();
    let list = crate::service::requests::my_requests(&ctx.state, &caller, now)
        .await
        .map_err(|e| ctx.fail(e))?
        .value
        .requests;
    let body = html! {
        h1 { (l.t("Mes demandes", "My requests")) }
        p { (l.t("Le délégué à la protection des données répond dans un délai d'un mois, prolongeable de deux mois si la demande est complexe (article 12 du RGPD).", "The data protection officer answers within one month, which may be extended by two months for a complex request (GDPR article 12).")) }
        @if list.is_empty() { p { (l.t("Vous n'avez fait aucune demande.", "You have made no request.")) } }
        @for r in &list {
            section.card aria-labelledby={ "d-" (r.id) } {
                h2 #{ "d-" (r.id) } { (super::dpo::request_kind(&r.kind, l)) }
                p { (l.t("Faite le ", "Made on ")) (date(r.created_at)) " · " (l.t("état : ", "state: ")) strong { (super::dpo::request_state(&r.state, l)) }
                    " · " (l.t("réponse attendue avant le ", "answer due by ")) (date(r.due_at)) }
                ol {
                    @for e in &r.history {
                        li { (date(e.at)) " — " (super::dpo::request_state(&e.state, l))
                            @if let Some(reason) = &e.reason {
                                @if e.state == "extended" { " (" (extension_reason(reason, l)) ")" }
                                @else if e.state == "refused" { " (" (super::dpo::refusal_label(reason, l)) ")" }
                            }
                        }
                    }
                }
                @if r.state == "refused" {
                    p { (l.t("Vous pouvez saisir la CNIL (www.cnil.fr) ou un juge.", "You may complain to the CNIL (www.cnil.fr) or go to court.")) }
                }
            }
        }
    };
    Ok(ctx.page(l.t("Mes demandes", "My requests"), body))
}
