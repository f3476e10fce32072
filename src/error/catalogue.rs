//! The one catalogue of the error codes the service answers with.
//!
//! Each variant carries its HTTP status, its stable code and its French and
//! English messages; nothing else in the crate writes a code or a status by
//! hand. `docs/errors.md` is generated from this table (`markdown`), and a
//! test fails when it is stale. A code may stand twice with two statuses
//! only when the two are different answers a client must tell apart (an
//! unknown purpose in a request body is 422; the access decision's refusal
//! for a purpose missing from the register is 403): the pair (code, status)
//! is unique, and so is each variant.
//!
//! Messages never carry a personal value: the safe detail an error may add
//! (a parameter's name, an allowed range) is given at the call site and
//! shown after the message.

use axum::http::StatusCode;

/// Declares the catalogue: `Variant = status, "code", "français", "English";`
/// grouped under a heading each (the headings are the sections of
/// `docs/errors.md`).
macro_rules! catalogue {
    ($( # $section:literal $( $(#[$doc:meta])* $variant:ident = $status:literal, $code:literal, $fr:literal, $en:literal; )* )*) => {
        /// A stable error code of the service, with its status and messages.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $( $(#[$doc])* $variant, )* )*
        }

        impl ErrorCode {
            /// Every code, in the catalogue's order.
            pub const ALL: &'static [ErrorCode] = &[$( $( ErrorCode::$variant, )* )*];

            /// The sections of the catalogue and their codes.
            pub const SECTIONS: &'static [(&'static str, &'static [ErrorCode])] =
                &[$( ($section, &[$( ErrorCode::$variant, )*]), )*];

            /// The stable machine-readable code (`error.code` in the body).
            pub fn code(self) -> &'static str {
                match self { $( $( ErrorCode::$variant => $code, )* )* }
            }

            /// The HTTP status this code is answered with.
            pub fn status(self) -> StatusCode {
                let n: u16 = match self { $( $( ErrorCode::$variant => $status, )* )* };
                StatusCode::from_u16(n).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }

            /// The message for a person reading French.
            pub fn message_fr(self) -> &'static str {
                match self { $( $( ErrorCode::$variant => $fr, )* )* }
            }

            /// The message for a person reading English.
            pub fn message_en(self) -> &'static str {
                match self { $( $( ErrorCode::$variant => $en, )* )* }
            }
        }
    };
}

catalogue! {
    # "Requests and the framework"
    NotFound = 404, "not_found", "Ressource introuvable.", "No such resource.";
    MethodNotAllowed = 405, "method_not_allowed", "Méthode non autorisée pour cette ressource.", "Method not allowed on this resource.";
    RequestTimeout = 408, "request_timeout", "La requête a pris trop de temps.", "The request took too long.";
    PayloadTooLarge = 413, "payload_too_large", "Le corps de la requête est trop volumineux.", "Request body too large.";
    /// The route's documented content type is the one to send
    /// (`application/json`, or `application/x-ndjson` for deposits).
    UnsupportedMediaType = 415, "unsupported_media_type", "Type de contenu non pris en charge : envoyez celui que la route documente.", "Unsupported content type: send the one the route documents.";
    RateLimited = 429, "rate_limited", "Trop de tentatives : réessayez plus tard.", "Too many attempts; retry later.";
    BadRequest = 400, "bad_request", "Requête invalide.", "Bad request.";
    InvalidJson = 400, "invalid_json", "JSON invalide.", "Malformed JSON.";
    UnreadableBody = 400, "unreadable_body", "Le corps de la requête n'a pas pu être lu.", "The request body could not be read.";
    MissingParameter = 400, "missing_parameter", "Un paramètre obligatoire manque.", "A required query parameter is missing.";
    InvalidParameter = 400, "invalid_parameter", "Un paramètre n'a pas la bonne forme.", "A query parameter is not in the right form.";
    Unprocessable = 422, "unprocessable", "Requête invalide.", "Invalid request.";
    InvalidForm = 422, "invalid_form", "Le formulaire n'a pas la bonne forme.", "The form is not in the right form.";
    Forbidden = 403, "forbidden", "Accès refusé.", "Access denied.";
    /// A resource that already exists (a unique key taken).
    Conflict = 409, "conflict", "Cette ressource existe déjà.", "This resource already exists.";
    ConcurrentUpdate = 409, "concurrent_update", "Une autre modification vient d'être enregistrée ; réessayez.", "Another change was just recorded; retry.";
    InvalidTransition = 409, "invalid_transition", "Ce changement d'état n'est pas possible.", "This change of state is not possible.";

    # "Availability and integrity"
    Unavailable = 503, "unavailable", "Service momentanément indisponible.", "Service temporarily unavailable.";
    DatabaseUnavailable = 503, "database_unavailable", "La base de données est momentanément indisponible.", "The database is temporarily unavailable.";
    AuditUnavailable = 503, "audit_unavailable", "Le journal d'audit est indisponible : rien n'a été communiqué.", "The audit log is unavailable: nothing was disclosed.";
    KeysUnavailable = 503, "keys_unavailable", "Une clé de chiffrement nécessaire n'est pas chargée.", "A needed encryption key is not loaded.";
    SelfReview = 403, "self_review", "Cette alerte porte sur vos propres actes : un autre référent ou le DPO doit l'examiner.", "This alert is about your own acts: another référent or the DPO must review it.";
    InvalidAlertRules = 422, "invalid_alert_rules", "Règles d'alerte invalides (horaires « mon-fri 08:30-12:00,13:30-17:30 », limite de 1 à 100 mandats en 1 à 1440 minutes, adresse de la structure valide, communes en codes INSEE).", "Invalid alert rules (hours `mon-fri 08:30-12:00,13:30-17:30`, a limit of 1 to 100 mandates within 1 to 1440 minutes, a valid structure address, communes as INSEE codes).";
    InvalidNoticePreference = 422, "invalid_notice_preference", "Préférence de notification invalide (événement inconnu, canal autre que email, post ou off, ou événement qui ne peut pas être désactivé).", "Invalid notification preference (unknown event, a channel other than email, post or off, or an event that cannot be turned off).";
    Sealed = 503, "sealed", "Le coffre est scellé : ses gardiens doivent le desceller avant tout accès aux données.", "The vault is sealed: its custodians must unseal it before any access to data.";
    InternalError = 500, "internal_error", "Erreur interne.", "Internal error.";
    IntegrityError = 500, "integrity_error", "Une donnée chiffrée n'a pas passé le contrôle d'intégrité.", "Stored data failed its integrity check.";

    # "Logging in and sessions"
    Unauthenticated = 401, "unauthenticated", "Connexion requise.", "Authentication required.";
    CrossSiteRequest = 403, "cross_site_request", "Cette demande vient d'un autre site : faites-la depuis votre espace.", "This request came from another site: make it from your space.";
    CsrfTokenInvalid = 403, "csrf_token_invalid", "Ce formulaire a expiré ou ne vient pas de ce site ; rechargez la page et recommencez.", "Missing or invalid anti-forgery (CSRF) token: reload the page and try again.";
    LoginNotConfigured = 503, "login_not_configured", "La connexion des usagers n'est pas configurée sur ce service.", "Resident login is not configured (COFFRE_OIDC_ISSUER).";
    AgentLoginNotConfigured = 503, "agent_login_not_configured", "La connexion des agents n'est pas configurée sur ce service.", "Agent login is not configured (COFFRE_AGENT_OIDC_ISSUER).";
    IdentityProviderUnavailable = 503, "identity_provider_unavailable", "Le fournisseur d'identité ne répond pas ; réessayez plus tard.", "The identity provider is unavailable; try again later.";
    OidcStateInvalid = 400, "oidc_state_invalid", "Cette connexion a expiré ou a été commencée ailleurs ; recommencez.", "Unknown, expired or foreign login state; log in again.";
    OidcCodeRejected = 401, "oidc_code_rejected", "Le fournisseur d'identité a refusé la connexion (code expiré ou déjà utilisé) ; recommencez.", "The provider refused the authorization code (expired or used); log in again.";
    OidcIdTokenInvalid = 401, "oidc_id_token_invalid", "La réponse du fournisseur d'identité n'a pas pu être vérifiée.", "The provider's ID token failed verification.";
    OidcLoginRefused = 401, "oidc_login_refused", "La connexion a été annulée ou refusée chez le fournisseur d'identité.", "The login was cancelled or refused at the identity provider.";
    OidcUserinfoInvalid = 401, "oidc_userinfo_invalid", "Les informations d'identité n'ont pas pu être vérifiées.", "The provider's userinfo failed verification.";
    AgentEmailMissing = 403, "agent_email_missing", "Le fournisseur d'identité n'a pas transmis d'adresse électronique.", "The agents' provider sent no e-mail.";
    AgentEmailUnverified = 403, "agent_email_unverified", "Adresse électronique non vérifiée.", "The e-mail is not verified by the provider.";
    AgentUnknown = 403, "agent_unknown", "Aucun compte agent ne correspond ; demandez à votre référent.", "No such agent account; ask your administrator (`coffre agent add`).";
    AgentInactive = 403, "agent_inactive", "Ce compte agent est désactivé.", "This agent account is deactivated.";
    UnknownPersona = 422, "unknown_persona", "Ce profil de démonstration n'existe pas.", "No such demo persona.";

    # "The access decision (each refusal is in the audit log)"
    ResidentOnly = 403, "resident_only", "Réservé à l'usager lui-même.", "Only the resident themself may do this.";
    AuditorOnly = 403, "auditor_only", "Réservé aux auditeurs et au DPO.", "Auditors and the DPO only.";
    RoleNotAllowed = 403, "role_not_allowed", "Votre rôle ne permet pas cette action.", "Your role does not allow this.";
    NotOwnData = 403, "not_own_data", "Ces données ne sont pas les vôtres.", "These are not your data.";
    ResidentNotFound = 403, "resident_not_found", "Aucun usager actif ne porte cet identifiant.", "No active resident has this id.";
    NoActiveMandate = 403, "no_active_mandate", "Aucun mandat actif ne couvre cette démarche.", "No active mandate covers this.";
    OutsideDemarche = 403, "outside_demarche", "La finalité dépasse les démarches du mandat.", "The purpose reaches beyond the mandate's démarches.";
    PurposeRequired = 403, "purpose_required", "Une finalité doit être nommée.", "A purpose must be named.";
    /// The access decision's refusal: the purpose named is not in the
    /// register (in a request body, an unknown purpose is 422).
    PurposeNotInRegister = 403, "unknown_purpose", "Cette finalité n'est pas au registre.", "This purpose is not in the register.";
    CategoryOutsidePurpose = 403, "category_outside_purpose", "Cette catégorie de données ne sert pas cette finalité.", "This data category is not used by this purpose.";
    NotARecipient = 403, "not_a_recipient", "Vous n'êtes pas destinataire de cette finalité.", "You are not a recipient of this purpose.";
    ExtractsOnly = 403, "extracts_only", "Cette finalité ne donne accès qu'à des extractions.", "This purpose gives access through extracts only.";
    NoValidConsent = 403, "no_valid_consent", "Aucun consentement valide pour cette finalité.", "No valid consent for this purpose.";
    Objection = 403, "objection", "L'usager s'est opposé à ce traitement.", "The resident objected to this processing.";
    ProcessingRestricted = 403, "processing_restricted", "Le traitement des données de cet usager est limité.", "Processing of this resident's data is restricted.";
    ExplicitConsentResidentOnly = 403, "explicit_consent_resident_only", "Un consentement explicite (données sensibles) ne peut être donné que par l'usager lui-même.", "Explicit consent (special-category data) is given by the resident only.";

    # "Consents"
    UnknownPurpose = 422, "unknown_purpose", "Finalité inconnue.", "Unknown purpose.";
    ConsentNotApplicable = 422, "consent_not_applicable", "Cette finalité ne repose pas sur le consentement.", "This purpose does not rest on consent.";
    CategoriesOutsidePurpose = 422, "categories_outside_purpose", "Catégories hors de la finalité.", "Categories outside the purpose.";
    CategoriesRequired = 422, "categories_required", "Cochez au moins une catégorie de données avant de donner votre consentement.", "Tick at least one data category before giving your consent.";
    DurationAboveMaximum = 422, "duration_above_maximum", "Cette durée dépasse celle que la finalité permet.", "This duration is above the purpose's maximum.";
    InvalidUntil = 422, "invalid_until", "La date de fin n'est pas valable.", "The end date is not valid.";
    ExplicitConsentRequired = 422, "explicit_consent_required", "Des données sensibles : le consentement doit être explicite.", "Special-category data: the consent must be explicit.";
    AlreadyGiven = 409, "already_given", "Un consentement est déjà donné pour cette finalité ; retirez-le d'abord.", "A consent is already given for this purpose; withdraw it first.";
    NotGiven = 409, "not_given", "Aucun consentement donné à retirer.", "There is no given consent to withdraw.";
    ResidentDecisionStands = 409, "resident_decision_stands", "L'usager a pris lui-même cette décision ; seul l'usager peut la changer (un retrait reste possible).", "The resident took this decision themself; only they can change it (withdrawal stays possible).";

    # "Records and the vault"
    UnknownCategory = 422, "unknown_category", "Catégorie inconnue.", "Unknown category.";
    UnknownField = 422, "unknown_field", "Champ inconnu.", "Unknown field.";
    InvalidField = 422, "invalid_field", "Un champ n'a pas la bonne forme.", "A field is not in the right form.";
    InvalidRecord = 422, "invalid_record", "Remplissez au moins un champ.", "Fill in at least one field.";
    ConfirmationRequired = 422, "confirmation_required", "Cochez la case pour confirmer.", "Tick the box to confirm.";
    PassphraseTooShort = 422, "passphrase_too_short", "La phrase de passe est trop courte.", "The passphrase is too short.";
    NotEmpty = 409, "not_empty", "La base a déjà des usagers : amorcez une base vide.", "The database already has residents: seed an empty one.";

    # "Mandates, aidants and structures"
    UnknownDemarche = 422, "unknown_demarche", "Démarche inconnue.", "Unknown démarche.";
    DemarchesRequired = 422, "demarches_required", "Choisissez au moins une démarche.", "Pick at least one démarche.";
    DemarcheNotAllowed = 422, "demarche_not_allowed", "Cette démarche n'est pas autorisée pour votre structure.", "A démarche outside your structure's allowed ones.";
    InvalidDuration = 422, "invalid_duration", "Durée : 1, 31, 182 ou 365 jours.", "Duration must be 1, 31, 182 or 365 days.";
    AttestationInvalid = 422, "attestation_invalid", "Cette attestation n'a pas été délivrée par ce service, ou a été modifiée.", "Not an attestation signed by this service.";
    ResidentConfirmationRequired = 422, "resident_confirmation_required", "La personne doit confirmer le récapitulatif.", "The resident must confirm the recap.";
    ResidentLoginRequired = 409, "resident_login_required", "La personne doit d'abord se connecter avec FranceConnect.", "The resident must log in first.";
    MandateDraftInvalid = 403, "mandate_draft_invalid", "Ce projet de mandat n'existe pas, a expiré, ou n'est pas celui de l'aidant connecté.", "Unknown or expired mandate draft, or not the logged-in aidant's.";
    RenewalOtherResident = 403, "renewal_other_resident", "Le renouvellement doit être confirmé par la personne du mandat.", "A renewal must be confirmed by the mandate's own resident.";
    AidantOnly = 403, "aidant_only", "Réservé aux aidants et référents habilités.", "Aidants and référents only.";
    ReferentOnly = 403, "referent_only", "Réservé aux référents.", "Référents only.";
    CannotCreateMandates = 403, "cannot_create_mandates", "Ce compte ne peut pas créer de mandat.", "This account may not create mandates.";
    StructureInactive = 403, "structure_inactive", "Aucune structure habilitée active pour ce compte.", "No active structure for this agent.";
    TotpNotEnrolled = 403, "totp_not_enrolled", "Aucune carte TOTP n'est associée à ce compte.", "No TOTP device enrolled (`coffre agent totp`).";
    TotpInvalid = 403, "totp_invalid", "Code TOTP erroné ou déjà utilisé.", "Wrong or already used TOTP code.";
    TotpLocked = 403, "totp_locked", "Trop de codes erronés : réessayez dans quelques minutes.", "Too many wrong codes; try again later.";
    MandateConflict = 409, "mandate_conflict", "Un autre mandat vient d'être créé pour ces démarches ; réessayez.", "Another mandate was just created for these démarches; try again.";
    NothingToRevoke = 409, "nothing_to_revoke", "Rien d'actif à révoquer dans ce mandat.", "Nothing active to revoke in this mandate.";

    # "Rights requests (GDPR art. 15 to 22)"
    UnknownRequestKind = 422, "unknown_request_kind", "Type de demande inconnu.", "Unknown kind of request.";
    ObjectionNotApplicable = 422, "objection_not_applicable", "Cette finalité repose sur votre consentement : retirez-le plutôt.", "This purpose rests on your consent: withdraw it instead.";
    InvalidOutcome = 422, "invalid_outcome", "Issue : accordée ou refusée.", "Outcome: `granted` or `refused`.";
    RefusalReasonRequired = 422, "refusal_reason_required", "Un refus doit donner sa raison à la personne (RGPD art. 12-4).", "A refusal must give the resident its reason (GDPR art. 12(4)).";
    UnknownRefusalReason = 422, "unknown_refusal_reason", "Motif de refus inconnu.", "Unknown reason of refusal.";
    InvalidReason = 422, "invalid_reason", "Le motif n'a pas la bonne forme.", "The reason is not in the right form.";
    ExtensionTooLate = 409, "extension_too_late", "Une prolongation se notifie dans le premier mois.", "An extension must be given within the first month.";

    # "Partners and extracts"
    InvalidClient = 401, "invalid_client", "Identifiants du partenaire invalides.", "Invalid client credentials.";
    InvalidToken = 401, "invalid_token", "Jeton d'accès invalide ou expiré.", "Invalid or expired access token.";
    UnsupportedGrantType = 400, "unsupported_grant_type", "Seul le type d'autorisation client_credentials est accepté.", "grant_type must be client_credentials.";
    UnknownPseudonym = 422, "unknown_pseudonym", "Pseudonyme inconnu pour ce partenaire.", "Unknown pseudonym for this partner.";
    InvalidKind = 422, "invalid_kind", "Type d'extraction : `records` ou `aggregate`.", "Kind: `records` or `aggregate`.";
    FieldOutsideCategories = 422, "field_outside_categories", "Un champ demandé n'est pas dans les catégories de l'extraction.", "A field's category is not among the extract's.";
    GroupByRequired = 422, "group_by_required", "Un agrégat doit nommer `group_by`.", "An aggregate needs `group_by`.";
    UndeclaredGroupBy = 422, "undeclared_group_by", "Un agrégat se groupe par des champs dont les valeurs sont déclarées (une liste, oui/non, un entier d'au plus 200 valeurs, une commune du territoire), en 5 000 cases au plus.", "An aggregate groups by fields whose values are declared (a list, yes/no, an integer of at most 200 values, a commune of the territory), in at most 5,000 cells.";
    NotSummable = 422, "not_summable", "Un agrégat ne somme que des champs entiers.", "Aggregates sum integer fields only.";
    InvalidForRecords = 422, "invalid_for_records", "`group_by` et `epsilon` sont réservés aux agrégats.", "`group_by` and `epsilon` are for aggregates.";
    InvalidEpsilon = 422, "invalid_epsilon", "ε doit être compris entre 0,01 et 2.", "ε must be between 0.01 and 2.";
    NoAgeRecipient = 422, "no_age_recipient", "Aucune clé age n'est enregistrée pour vous : l'extraction ne pourrait pas être chiffrée.", "No age recipient registered for you.";
    InvalidDecision = 422, "invalid_decision", "Choisissez approuver ou rejeter.", "Choose approve or reject.";
    InvalidAction = 422, "invalid_action", "Action inconnue.", "Unknown action.";
    EpsilonBudgetExhausted = 409, "epsilon_budget_exhausted", "Budget ε du partenaire épuisé.", "The partner's ε budget is spent.";
    ExtractNotReady = 409, "extract_not_ready", "Cette extraction n'est pas prête.", "This extract is not ready.";
    ExtractExpired = 410, "extract_expired", "Ce fichier a atteint la fin de sa durée de conservation.", "The file reached the end of its retention.";

    # "Data sources and their links"
    UnknownSource = 422, "unknown_source", "Source inconnue du registre des sources.", "No such source in the register of sources.";
    SourceNotLinkable = 422, "source_not_linkable", "Cette source ne se lie pas : elle vous reconnaît par votre identité (mission de service public).", "This source does not link: it matches you by your identity (public task).";
    RedirectUriNotRegistered = 422, "redirect_uri_not_registered", "Cette adresse de retour n'est pas enregistrée pour cette source.", "This redirect URI is not registered for this source.";
    InvalidGrant = 422, "invalid_grant", "Code inconnu, expiré ou déjà utilisé.", "Unknown, expired or already used code.";
    NoLink = 409, "no_link", "Aucune autorisation en cours pour cette source.", "No standing authorisation for this source.";

    # "Deposits from data sources (each refused line of a stream answers its code; the stream goes on)"
    LineTooLong = 413, "line_too_long", "Ligne de plus de 64 Ko.", "A line over 64 KB.";
    InvalidDeposit = 422, "invalid_deposit", "Dépôt mal formé : `id`, `handle` ou `pivot`, `category`, `fields` et `observed_at` attendus.", "Malformed deposit: `id`, `handle` or `pivot`, `category`, `fields` and `observed_at` expected.";
    InvalidObservedAt = 422, "invalid_observed_at", "`observed_at` : une date RFC 3339 ou des secondes depuis l'époque Unix, pas dans le futur.", "`observed_at`: an RFC 3339 date or seconds since the Unix epoch, not in the future.";

    CategoryNotDeposited = 403, "category_not_deposited", "Cette source n'est pas enregistrée pour déposer cette catégorie.", "This source is not registered to deposit this category.";
    /// No active resident has this pivot identity (the answer says nothing
    /// of whether the person exists elsewhere).
    UnknownPivot = 422, "unknown_pivot", "Identité pivot inconnue.", "Unknown pivot identity.";
    ResidentCorrectionStands = 409, "resident_correction_stands", "La personne a corrigé cette donnée après l'observation déposée : sa correction reste.", "The resident corrected this data after the deposited observation: their correction stands.";

    # "The audit log"
    InvalidRange = 422, "invalid_range", "Intervalle invalide.", "Invalid range.";
    TreeSizeTooLarge = 422, "tree_size_too_large", "Le journal ne compte pas autant d'entrées.", "The log does not hold that many entries.";
    LeafIndexOutOfRange = 422, "leaf_index_out_of_range", "L'entrée demandée est hors de l'arbre.", "leaf_index must be below tree_size.";

    # "Open statistics"
    InvalidPeriod = 422, "invalid_period", "Le mois s'écrit AAAA-MM (de 2000 à 2999).", "A month is written YYYY-MM (2000 to 2999).";
    PeriodNotOver = 409, "period_not_over", "Ce mois n'est pas terminé : seul un mois entier est publié.", "This month is not over: only a whole month is published.";
    StatsBudgetExhausted = 409, "stats_budget_exhausted", "Le budget de confidentialité (ε) de l'année est dépensé : aucune publication de plus cette année.", "The year's privacy budget (ε) is spent: no more releases this year.";
}

impl ErrorCode {
    /// The message in both languages, French first: what the JSON body
    /// carries.
    pub fn message(self) -> String {
        format!("{} / {}", self.message_fr(), self.message_en())
    }

    /// `docs/errors.md`: the catalogue as a reader's table.
    pub fn markdown() -> String {
        let mut out = String::from(
            "# Error codes\n\n\
             <!-- Generated from src/error/catalogue.rs; a test fails when this file is stale. \
             Regenerate: COFFRE_BLESS=1 cargo test --test api errors:: -->\n\n\
             Every refusal and failure is answered as `{\"error\": {\"code\", \"message\"}}` \
             with one of these stable codes and its HTTP status. The message is French, then \
             English, and may end with a safe detail in parentheses (a parameter's name, an \
             allowed range); it never carries a personal value.\n",
        );
        for (section, codes) in Self::SECTIONS {
            out.push_str(&format!(
                "\n## {section}\n\n| code | status | message (fr) | message (en) |\n|---|---|---|---|\n"
            ));
            for c in *codes {
                out.push_str(&format!(
                    "| `{}` | {} | {} | {} |\n",
                    c.code(),
                    c.status().as_u16(),
                    c.message_fr().replace('|', "\\|"),
                    c.message_en().replace('|', "\\|"),
                ));
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::ErrorCode;
    use std::collections::HashSet;

    #[test]
    fn each_code_and_status_pair_is_unique_and_well_formed() {
        let mut seen = HashSet::new();
        for c in ErrorCode::ALL {
            assert!(
                seen.insert((c.code(), c.status())),
                "{c:?}: ({}, {}) twice",
                c.code(),
                c.status()
            );
            assert!(
                c.code()
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch == '_'),
                "{c:?}"
            );
            assert!(
                c.status().is_client_error() || c.status().is_server_error(),
                "{c:?}"
            );
            for m in [c.message_fr(), c.message_en()] {
                assert!(!m.is_empty() && !m.contains(" / "), "{c:?}: {m}");
            }
        }
        let in_sections: usize = ErrorCode::SECTIONS.iter().map(|(_, c)| c.len()).sum();
        assert_eq!(in_sections, ErrorCode::ALL.len());
    }
}
