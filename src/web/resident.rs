//! The resident's space: my data (view, correct), my consents (give, refuse,
//! withdraw), who accessed my data and why, my mandates (revoke), my
//! receipts, erase my data.

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::header::{self, HeaderValue};
use axum::response::IntoResponse;
use maud::{Markup, html};
use serde_json::{Map, Value, json};

use super::public::{basis_text, category_label, purpose_title};
use super::{Ctx, Form, Lang, PageError, PageResult, csrf, date, date_time};
use crate::audit::AuditEntry;
use crate::domain::Role;
use crate::domain::category::FieldType;
use crate::domain::consent::GiveRequest;
use crate::error::AppError;
use crate::http::session::CurrentUser;
use crate::service::consents::Decision;

const RESIDENT: &[Role] = &[Role::Resident];

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
/// field in words, in both languages (the vault's own message names it by
/// its code).
pub fn posted_record(ctx: &Ctx, category: &str, form: &Form) -> Result<Value, FormError> {
    let unknown = || {
        (
            None,
            AppError::unprocessable(
                "unknown_category",
                "Catégorie inconnue. / Unknown category.",
            ),
        )
    };
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
        let unreadable = || (Some(name.clone()), invalid_field(name));
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
            let e = invalid_field(&field);
            Err((Some(field), e))
        }
        Err(crate::domain::category::RecordError::NotAnObject) => Err((
            None,
            AppError::unprocessable(
                "invalid_record",
                "Remplissez au moins un champ. / Fill in at least one field.",
            ),
        )),
        Err(e) => Err((None, AppError::unprocessable(e.code(), e.to_string()))),
    }
}

fn invalid_field(name: &str) -> AppError {
    let fr = field_label(name, Lang::Fr);
    let en = field_label(name, Lang::En);
    AppError::unprocessable(
        "invalid_field",
        format!(
            "Le champ « {fr} » n'a pas la bonne forme. / The field \"{en}\" is not in the right form."
        ),
    )
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
    let message = refused
        .as_ref()
        .map(|r| super::in_lang(&r.error.to_string(), l));
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

fn state_label(state: &str, l: Lang) -> &'static str {
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

async fn my_consents(
    ctx: &Ctx,
    user: &CurrentUser,
) -> Result<Vec<crate::service::consents::ConsentWithHistory>, PageError> {
    let now = ctx.state.clock.now();
    crate::service::consents::my_consents(&ctx.state, &ctx.caller(user), now)
        .await
        .map(|done| done.value.consents)
        .map_err(|e| ctx.fail(e))
}

pub async fn consents(ctx: Ctx) -> PageResult {
    let user = ctx.user_in(RESIDENT)?;
    let l = ctx.lang;
    let consents = my_consents(&ctx, &user).await?;
    let of = |purpose: &str| {
        consents
            .iter()
            .map(|c| &c.consent)
            .find(|c| c.purpose == purpose)
    };
    let (asked, public): (Vec<_>, Vec<_>) = ctx
        .state
        .register
        .all()
        .partition(|p| p.legal_basis.needs_consent());
    let body = html! {
        h1 { (l.t("Mes consentements", "My consents")) }
        p { (l.t("Pour chaque finalité ci-dessous, vous choisissez. Rien n'est coché d'avance. Vous pouvez retirer votre consentement à tout moment, en un clic ; ce retrait vaut pour l'avenir.",
                  "For each purpose below, you choose. Nothing is ticked in advance. You can withdraw your consent at any time, in one click; the withdrawal applies from then on.")) }
        @for p in &asked {
            @let current = of(&p.id);
            @let state = current.map(|c| c.state.as_str()).unwrap_or("");
            section.card aria-labelledby={ "f-" (p.id) } {
                h2 #{ "f-" (p.id) } { (purpose_title(p, l)) }
                p { (l.t(&p.description_fr, &p.description_en)) }
                p.small {
                    (l.t("Responsable : ", "Controller: ")) (p.controller) ". "
                    @if p.recipients.is_empty() { (l.t("Aucun partenaire ne reçoit ces données.", "No partner receives this data.")) }
                    @else { (l.t("Partenaires destinataires : ", "Receiving partners: ")) (p.recipients.join(", ")) "." }
                    " " (l.t("Durée maximale : ", "Longest duration: ")) (p.max_consent_days) (l.t(" jours.", " days."))
                }
                p {
                    (l.t("Votre choix actuel : ", "Your current choice: "))
                    @if let Some(c) = current {
                        (state_badge(state, l))
                        @if state == "given" {
                            " " (l.t("jusqu'au ", "until ")) (date(c.valid_until.unwrap_or(0)))
                            " — " (c.categories.iter().map(|c| category_label(&ctx, c)).collect::<Vec<_>>().join(", "))
                        }
                    } @else {
                        (l.t("aucun", "none"))
                    }
                }
                @if state == "given" {
                    @if let Some(c) = current {
                        form method="post" action={ "/moi/consentements/" (c.id) "/retrait" } {
                            (csrf(&user))
                            button.danger { (l.t("Retirer mon consentement", "Withdraw my consent")) }
                        }
                    }
                } @else {
                    form method="post" action="/moi/consentements" {
                        (csrf(&user))
                        input type="hidden" name="purpose" value=(p.id);
                        fieldset {
                            legend { (l.t("Données que j'accepte de partager pour cette finalité", "Data I agree to share for this purpose")) }
                            @for c in &p.categories {
                                div.choice {
                                    input type="checkbox" id={ "cat-" (p.id) "-" (c) } name="categories" value=(c);
                                    label for={ "cat-" (p.id) "-" (c) } { (category_label(&ctx, c)) }
                                }
                            }
                        }
                        @if p.special_category {
                            div.choice {
                                input type="checkbox" id={ "explicit-" (p.id) } name="explicit" value="true";
                                label for={ "explicit-" (p.id) } { (l.t("J'accepte expressément que mes données de santé soient utilisées pour cette finalité.", "I expressly agree that my health data be used for this purpose.")) }
                            }
                        }
                        p {
                            button name="decision" value="given" { (l.t("Je donne mon consentement", "I give my consent")) }
                            " "
                            button.secondary name="decision" value="refused" { (l.t("Je refuse", "I refuse")) }
                        }
                    }
                }
            }
        }
        h2 { (l.t("Sans consentement : les missions de service public", "Without consent: public tasks")) }
        p { (l.t("Ces traitements ne reposent pas sur votre consentement mais sur une mission de service public. Refuser ou retirer un consentement ci-dessus ne les change pas. Vous pouvez vous y opposer en écrivant au délégué à la protection des données.",
                  "This processing does not rest on your consent but on a public task. Refusing or withdrawing a consent above does not change it. You can object to it by writing to the data protection officer.")) }
        ul {
            @for p in &public {
                li { strong { (purpose_title(p, l)) } " — " (basis_text(p.legal_basis, l)) }
            }
        }
    };
    Ok(ctx.page(l.t("Mes consentements", "My consents"), body))
}

pub async fn decide(ctx: Ctx, body: Bytes) -> PageResult {
    let form = Form::parse(&body);
    let user = ctx.form_user(RESIDENT, &form)?;
    let decision = form.get("decision").unwrap_or_default().to_string();
    let categories = form.all("categories");
    if decision == "given" && categories.is_empty() {
        return Err(ctx.fail_at(AppError::unprocessable(
            "categories_required",
            "Cochez au moins une catégorie de données avant de donner votre consentement. / Tick at least one data category before giving your consent.",
        ), "/moi/consentements"));
    }
    let back = "/moi/consentements";
    let explicit = form.get("explicit") == Some("true");
    let chosen = match decision.as_str() {
        "given" => Decision::Give(GiveRequest {
            categories: Some(categories),
            until: None,
            explicit,
        }),
        "refused" => Decision::Refuse,
        _ => {
            return Err(ctx.fail_at(
                AppError::unprocessable("invalid_form", "decision: `given` or `refused`"),
                back,
            ));
        }
    };
    let purpose = form.get("purpose").unwrap_or_default();
    let _receipt =
        crate::service::consents::decide_own(&ctx.state, &ctx.caller(&user), purpose, || {
            Ok(chosen)
        })
        .await
        .map_err(|e| ctx.fail(e))?;
    Ok(ctx.done(
        "/moi/consentements",
        if decision == "given" {
            "donne"
        } else {
            "refuse"
        },
    ))
}

pub async fn withdraw(ctx: Ctx, Path(id): Path<String>, body: Bytes) -> PageResult {
    let form = Form::parse(&body);
    let user = ctx.form_user(RESIDENT, &form)?;
    let back = "/moi/consentements";
    let _receipt = crate::service::consents::withdraw_own(&ctx.state, &ctx.caller(&user), &id)
        .await
        .map_err(|e| ctx.fail_at(e, back))?;
    // The consent's id, not its purpose, goes in the address: a purpose
    // (health, say) says something about the person.
    Ok(super::redirect(&format!("/moi/consentements/{id}/retire")))
}

/// After a withdrawal: what it means, and how to give consent again.
pub async fn withdrawn(ctx: Ctx, Path(id): Path<String>) -> PageResult {
    let user = ctx.user_in(RESIDENT)?;
    let l = ctx.lang;
    // Only the person's own consent, and only once withdrawn.
    let consent = crate::service::consents::own_withdrawn(&ctx.state, &ctx.caller(&user), &id)
        .await
        .map_err(|e| ctx.fail(e))?;
    let purpose = ctx.state.register.get(&consent.purpose);
    let title = l.t("Consentement retiré", "Consent withdrawn");
    let body = html! {
        h1 { (title) }
        div.ok role="status" {
            p {
                (l.t("Votre consentement est retiré", "Your consent is withdrawn"))
                @if let Some(p) = purpose { (l.t(" pour « ", " for \"")) (purpose_title(p, l)) (l.t(" »", "\"")) }
                (l.t(", dès maintenant. Plus aucun partenaire ne peut utiliser vos données à ce titre.", ", from now on. No partner may use your data for it any more."))
            }
            @if purpose.is_some_and(|p| p.withdrawal_erases) {
                p { (l.t("Les données gardées uniquement pour cette finalité sont effacées.", "Data kept only for this purpose is erased.")) }
            }
            p { (l.t("Ce qui a été fait avant le retrait reste licite : le retrait vaut pour l'avenir.", "What was done before the withdrawal remains lawful: the withdrawal applies from now on.")) }
        }
        h2 { (l.t("Changer d'avis", "Changing your mind")) }
        p { (l.t("Vous pouvez redonner votre consentement quand vous voulez : retournez sur « Mes consentements », cochez les données à partager et choisissez « Je donne mon consentement ». Un reçu signé prouve chacun de vos choix.",
                  "You can give your consent again whenever you want: go back to \"My consents\", tick the data to share and choose \"I give my consent\". A signed receipt proves each of your choices.")) }
        p { a href="/moi/consentements" { (l.t("Retour à mes consentements", "Back to my consents")) } }
    };
    Ok(ctx.page(title, body))
}

/// "Vous avez consulté" for my own acts, "Awa Diallo a consulté" for others.
fn sentence(who: &str, action: &str, l: Lang) -> String {
    if who != l.t("Vous", "You") {
        return format!("{who} {action}");
    }
    match l {
        Lang::Fr => {
            let own = if let Some(rest) = action.strip_prefix("a ") {
                format!("avez {rest}")
            } else if let Some(rest) = action.strip_prefix("s'est ") {
                format!("vous êtes {rest}")
            } else if let Some(rest) = action.strip_prefix("vous a ") {
                format!("avez été {rest}")
            } else {
                action.to_string()
            };
            format!("Vous {own}")
        }
        Lang::En => format!("You {action}"),
    }
}

/// Who did something about me, in words: me, a named aidant of a named
/// structure, a named partner, or the service itself. `seen` keeps the
/// names already looked up for this page: a page of 100 entries names the
/// same few actors again and again.
async fn who(
    ctx: &Ctx,
    me: &str,
    e: &AuditEntry,
    seen: &mut std::collections::HashMap<(String, Option<String>), String>,
) -> String {
    let key = (e.actor_id.clone(), e.structure_id.clone());
    if let Some(name) = seen.get(&key) {
        return name.clone();
    }
    let name = who_uncached(ctx, me, e).await;
    seen.insert(key, name.clone());
    name
}

async fn who_uncached(ctx: &Ctx, me: &str, e: &AuditEntry) -> String {
    let l = ctx.lang;
    let actor = e.actor_id.as_str();
    let role = e.actor_role.as_str();
    if actor == me {
        return l.t("Vous", "You").to_string();
    }
    match role {
        "partner" => {
            match crate::service::journal::actor_name(&ctx.state, actor, role, None)
                .await
                .name
            {
                Some(name) => format!("{} {}", l.t("Le partenaire", "Partner"), name),
                None => l.t("Un partenaire", "A partner").to_string(),
            }
        }
        "aidant" | "referent" | "dpo" | "auditor" | "admin" => {
            let named = crate::service::journal::actor_name(
                &ctx.state,
                actor,
                role,
                e.structure_id.as_deref(),
            )
            .await;
            let name = named.name.unwrap_or_else(|| actor.to_string());
            let what = match role {
                "aidant" => l.t("aidant", "aidant"),
                "referent" => l.t("référent", "referent"),
                "dpo" => l.t(
                    "le délégué à la protection des données",
                    "the data protection officer",
                ),
                "auditor" => l.t("auditeur", "auditor"),
                _ => l.t("administrateur", "administrator"),
            };
            let structure = named
                .structure
                .map(|st| format!(" ({st})"))
                .unwrap_or_default();
            format!("{name}, {what}{structure}")
        }
        "system" | "service" => l
            .t(
                "Le service (tâche automatique)",
                "The service (automatic task)",
            )
            .to_string(),
        _ => l.t("Le service", "The service").to_string(),
    }
}

fn action_text(action: &str, l: Lang) -> &'static str {
    match action {
        "data.read" => l.t("a consulté", "read"),
        "data.write" => l.t("a modifié", "changed"),
        "consent.give" => l.t(
            "a enregistré un choix de consentement",
            "recorded a consent choice",
        ),
        "consent.refuse" => l.t("a enregistré un refus", "recorded a refusal"),
        "consent.withdraw" => l.t("a retiré un consentement", "withdrew a consent"),
        "consent.read" => l.t("a consulté les reçus", "read the receipts"),
        "audit.read" => l.t("a consulté le journal des accès", "read the access log"),
        "extract.include" => l.t(
            "vous a inclus dans une extraction",
            "included you in an extract",
        ),
        "extract.aggregate" => l.t(
            "vous a compté dans des statistiques agrégées",
            "counted you in aggregate statistics",
        ),
        "mandate.create" => l.t("a créé un mandat", "created a mandate"),
        "mandate.revoke" => l.t("a révoqué un mandat", "revoked a mandate"),
        "mandate.renew" => l.t("a renouvelé un mandat", "renewed a mandate"),
        "mandate.recap" => l.t(
            "a affiché le récapitulatif du mandat",
            "showed the mandate recap",
        ),
        "mandate.resident_login" => l.t("s'est connecté pour un mandat", "logged in for a mandate"),
        "mandate.read" => l.t("a consulté un mandat", "read a mandate"),
        "login" => l.t("s'est connecté", "logged in"),
        "logout" => l.t("s'est déconnecté", "logged out"),
        "retention.purge" => l.t(
            "a effacé des données arrivées au terme de leur conservation",
            "erased data at the end of its retention",
        ),
        "erasure.purpose" => l.t(
            "a effacé des données après un retrait",
            "erased data after a withdrawal",
        ),
        "rights.request" => l.t("a demandé à exercer un droit", "asked to exercise a right"),
        "rights.manage" | "rights.read" => l.t(
            "a traité une demande d'exercice de vos droits",
            "handled a rights request",
        ),
        "resident.create" => l.t("a créé votre compte", "created your account"),
        _ => l.t("a agi sur votre dossier", "acted on your file"),
    }
}

pub async fn accesses(ctx: Ctx) -> PageResult {
    let user = ctx.user_in(RESIDENT)?;
    let l = ctx.lang;
    let before = match ctx.query.get("avant") {
        Some(b) => b.parse::<u64>().map_err(|_| {
            ctx.fail(AppError::bad_request(
                "invalid_parameter",
                "query parameter `before` must be a whole number",
            ))
        })?,
        None => u64::MAX,
    };
    let now = ctx.state.clock.now();
    let all = crate::service::journal::my_accesses(&ctx.state, &ctx.caller(&user), before, now)
        .await
        .map_err(|e| ctx.fail(e))?
        .value
        .accesses;
    let mut rows = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for a in &all {
        let f = &a.entry.fields;
        // My own look at my own space is not news to me.
        let own_read = f.actor_id == user.actor_id
            && matches!(
                f.action.as_str(),
                "data.read" | "audit.read" | "consent.read" | "mandate.read" | "rights.read"
            );
        if own_read {
            continue;
        }
        let who = who(&ctx, &user.actor_id, f, &mut seen).await;
        rows.push((a.entry.index, f, who, a.proof.is_some()));
    }
    let oldest = all.last().map(|a| a.entry.index);
    let body = html! {
        h1 { (l.t("Qui a vu mes données", "Who saw my data")) }
        p { (l.t("Chaque consultation, modification ou refus d'accès vous concernant est inscrit dans le journal vérifiable, avec la raison. Les plus récents d'abord ; vos propres consultations de votre espace ne sont pas répétées ici.",
                  "Every read, change or refused access about you is written to the verifiable log, with the reason. Newest first; your own visits to your space are not repeated here.")) }
        @if rows.is_empty() {
            p { (l.t("Aucun accès pour l'instant.", "No access yet.")) }
        }
        ol.plain {
            @for (index, f, who, proved) in &rows {
                @let allowed = f.decision == crate::audit::Decision::Allow;
                li.card {
                    h2 {
                        (sentence(who, action_text(&f.action, l), l))
                        @if let Some(c) = f.category.as_deref().filter(|c| !c.starts_with("extract:")) { " — " (category_label(&ctx, c)) }
                        @if !allowed { " " (l.t("(refusé)", "(refused)")) }
                    }
                    p { (date_time(f.timestamp, l)) }
                    @if let Some(p) = f.purpose.as_deref() {
                        p { (l.t("Finalité : ", "Purpose: "))
                            @if let Some(def) = ctx.state.register.get(p) { (purpose_title(def, l)) } @else { (p) } }
                    }
                    @if let Some(b) = f.on_behalf_of.as_deref().filter(|b| *b == user.actor_id && f.actor_id != user.actor_id) {
                        @let _ = b;
                        p { (l.t("Au titre de votre mandat.", "Under your mandate.")) }
                    }
                    p.small { (l.t("Raison : ", "Reason: ")) code { (f.reason) } " · " (l.t("entrée n° ", "entry #")) (index)
                        @if *proved { " · " (l.t("preuve d'inclusion disponible", "inclusion proof available")) } }
                }
            }
        }
        @if let Some(o) = oldest.filter(|_| all.len() >= 100) {
            p { a href={ "/moi/acces?avant=" (o) } { (l.t("Accès plus anciens", "Older accesses")) } }
        }
        p.small { a href="/api/v1/me/accesses" { (l.t("Les mêmes entrées avec leurs preuves (JSON)", "The same entries with their proofs (JSON)")) } }
    };
    Ok(ctx.page(l.t("Qui a vu mes données", "Who saw my data"), body))
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
        return Err(ctx.fail_at(
            AppError::unprocessable(
                "confirmation_required",
                "Cochez la case pour confirmer la révocation. / Tick the box to confirm the revocation.",
            ),
            "/moi/mandats",
        ));
    }
    crate::service::agents::resident_revoke(
        &ctx.state,
        &ctx.caller(&user),
        &id,
        crate::service::agents::RevokeRequest::default(),
    )
    .await
    .map_err(|e| ctx.fail_at(e, "/moi/mandats"))?;
    Ok(ctx.done("/moi/mandats", "revoque"))
}

async fn receipts_of(
    ctx: &Ctx,
    user: &CurrentUser,
    consent: &str,
) -> Result<Vec<String>, PageError> {
    crate::service::consents::receipts(&ctx.state, &ctx.caller(user), consent)
        .await
        .map(|done| done.value.receipts)
        .map_err(|e| ctx.fail(e))
}

pub async fn receipts(ctx: Ctx) -> PageResult {
    let user = ctx.user_in(RESIDENT)?;
    let l = ctx.lang;
    // One receipt per event of the history, in the same order: the page
    // needs no second read (each would be another audited access).
    let items = my_consents(&ctx, &user).await?;
    let body = html! {
        h1 { (l.t("Mes reçus", "My receipts")) }
        p { (l.t("Chaque fois que vous donnez, refusez ou retirez un consentement, vous recevez un reçu signé par la collectivité (format « Consent Receipt » de Kantara, signé en JWS). Gardez-le : il prouve votre choix, même sans nous.",
                  "Each time you give, refuse or withdraw a consent, you get a receipt signed by the authority (Kantara Consent Receipt, signed as JWS). Keep it: it proves your choice, even without us.")) }
        p.small { (l.t("La clé qui vérifie les signatures : ", "The key that checks the signatures: ")) a href="/.well-known/jwks.json" { "/.well-known/jwks.json" } }
        @if items.is_empty() { p { (l.t("Aucun reçu pour l'instant.", "No receipt yet.")) } }
        @for c in &items {
            @let purpose = ctx.state.register.get(&c.consent.purpose);
            section.card {
                h2 { @if let Some(p) = purpose { (purpose_title(p, l)) } @else { (c.consent.purpose) } }
                ol {
                    @for (i, h) in c.history.iter().enumerate() {
                        li { a href={ "/moi/recus/" (c.consent.id) "/" (i + 1) } download {
                            (l.t("Reçu : ", "Receipt: ")) (state_label(&h.state, l)) (l.t(" le ", " on ")) (date(h.at)) (l.t(" (fichier JWS)", " (JWS file)")) } }
                    }
                }
            }
        }
    };
    Ok(ctx.page(l.t("Mes reçus", "My receipts"), body))
}

/// One receipt, as a file to keep (`application/jose`).
pub async fn receipt_file(ctx: Ctx, Path((consent, number)): Path<(String, usize)>) -> PageResult {
    let user = ctx.user_in(RESIDENT)?;
    let rs = receipts_of(&ctx, &user, &consent).await?;
    let jws = number
        .checked_sub(1)
        .and_then(|i| rs.get(i))
        .ok_or_else(|| ctx.fail(AppError::NotFound))?;
    let disposition = format!("attachment; filename=\"recu-{consent}-{number}.jws\"");
    let mut res = jws.clone().into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jose"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
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
        return Err(ctx.fail_at(AppError::unprocessable(
            "confirmation_required",
            "Cochez la case pour confirmer l'effacement. / Tick the box to confirm the erasure.",
        ), "/moi/effacement"));
    }
    let now = ctx.state.clock.now();
    crate::service::data::erase_own(&ctx.state, &ctx.caller(&user), now)
        .await
        .map_err(|e| ctx.fail_at(e, "/moi/effacement"))?;
    Ok(ctx.done("/", "efface"))
}
