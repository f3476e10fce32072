//! `/statistiques`: the open statistics of the commons (BRIEF C12), French
//! first. Charts are SVG drawn here, inline (no script, no chart library,
//! no request of their own), each with its data table and a sentence that
//! says what it shows; the page states the protection and the budget.

use maud::{Markup, html};

use super::{Ctx, Lang, PageResult};
use crate::service::stats::{self, TableView};

/// Bars per chart: the largest published cells (the CSV holds them all).
const BARS: usize = 10;

pub async fn statistics(ctx: Ctx) -> PageResult {
    let l = ctx.lang;
    let period = match ctx.query.get("periode") {
        Some(p) => Some(stats::parse_period(p).map_err(|e| ctx.fail_at(e, "/statistiques"))?),
        None => None,
    };
    let stats::StatsPage {
        shown,
        releases,
        year,
        spent,
    } = stats::page(&ctx.state, period, ctx.state.clock.now())
        .await
        .map_err(|e| ctx.fail(e))?;
    let body = html! {
        h1 { (l.t("Statistiques ouvertes du coffre", "Open statistics of the vault")) }
        p { (l.t(
            "Chaque mois, le coffre publie ce qui s'y est passé : consentements, lectures de données, refus, extractions, mandats, demandes de droits et dépôts des sources. Les fichiers sont libres de réutilisation (Licence Ouverte 2.0) et ne changent jamais une fois publiés.",
            "Each month, the vault publishes what happened in it: consents, data reads, refusals, extracts, mandates, rights requests and sources' deposits. The files are free to reuse (Open Licence 2.0) and never change once published.")) }
        h2 { (l.t("Comment les personnes sont protégées", "How people are protected")) }
        p { (l.t(
            "Chaque nombre reçoit un bruit aléatoire de confidentialité différentielle (loi de Laplace discrète, bibliothèque OpenDP) : on ne peut pas savoir si une personne donnée est comptée. Un nombre inférieur à 11 après bruit est publié « < 11 » ; une case retirée pour qu'aucune petite case ne se déduise du total est publiée « s ». Une même case demandée deux fois reçoit le même bruit : refaire le calcul ne permet pas de l'effacer.",
            "Each number gets random differential-privacy noise (discrete Laplace, OpenDP library): nobody can tell whether a given person is counted. A number under 11 after noise is published as \"< 11\"; a cell withheld so that no small cell can be deduced from the total is published as \"s\". The same cell asked twice gets the same noise: asking again cannot average it away.")) }
        p {
            (l.t("Budget de confidentialité : ε = ", "Privacy budget: ε = ")) (ctx.state.config.stats_release_epsilon)
            (l.t(" par publication, au plus ", " per release, at most ")) (ctx.state.config.stats_annual_epsilon)
            (l.t(" par an ; dépensé en ", " a year; spent in ")) (year) " : " strong { (format!("{spent}")) } ". "
            a href="/api/v1/stats/ledger" { (l.t("Le registre des dépenses", "The ledger of spending")) }
        }
        @match &shown {
            None => p { (l.t("Aucune publication pour l'instant : la première paraît au début du mois prochain.", "No release yet: the first one comes out early next month.")) },
            Some(r) => {
                h2 { (l.t("Publication ", "Release ")) (r.row.period) }
                p {
                    (l.t("Empreinte SHA-256, inscrite au journal vérifiable (entrée ", "SHA-256 fingerprint, written to the verifiable log (entry ")) (r.row.audit_index) ") : "
                    code.hash { (r.row.sha256) }
                }
                ul {
                    li { a href={ "/api/v1/stats/releases/" (r.row.period) } { (l.t("Le paquet de données (datapackage.json, Frictionless)", "The data package (datapackage.json, Frictionless)")) } }
                    li { a href="/api/v1/stats/catalog.jsonld" { (l.t("Le catalogue DCAT (moissonné par data.gouv.fr)", "The DCAT catalogue (harvested by data.gouv.fr)")) } }
                }
                @for (i, t) in r.tables.iter().enumerate() {
                    (chart(l, &r.row.period, i, t))
                }
            }
        }
        @if releases.len() > 1 {
            h2 { (l.t("Toutes les publications", "Every release")) }
            ul { @for r in &releases { li { a href={ "/statistiques?periode=" (r) } { (r) } } } }
        }
    };
    Ok(ctx.page(l.t("Statistiques ouvertes", "Open statistics"), body))
}

fn label(cell: &[String]) -> String {
    cell.join(" · ")
}

/// One table: its title, what it counts, a bar chart of its largest
/// published cells, the same numbers as a table, the total and the file.
fn chart(l: Lang, period: &str, i: usize, t: &TableView) -> Markup {
    let (title_fr, title_en) = t.table.title();
    let (sentence_fr, sentence_en) = t.table.sentence();
    let mut bars: Vec<(&Vec<String>, u64)> = t
        .cells
        .iter()
        .filter_map(|(k, v)| v.parse::<u64>().ok().map(|n| (k, n)))
        .collect();
    bars.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    bars.truncate(BARS);
    let max = bars.first().map(|b| b.1).unwrap_or(1).max(1);
    let small = t
        .cells
        .iter()
        .filter(|(_, v)| v.parse::<u64>().is_err())
        .count();
    let id = format!("graphique-{i}");
    let row_h = 34u64;
    let height = row_h * bars.len() as u64 + 4;
    html! {
        section aria-labelledby={ (id) "-titre" } {
            h3 id={ (id) "-titre" } { (l.t(title_fr, title_en)) }
            p { (l.t(sentence_fr, sentence_en)) " " (l.t("Total : ", "Total: ")) strong { (t.total) } "." }
            @if bars.is_empty() {
                p { (l.t("Aucune case de ce tableau n'atteint 11 après bruit : il n'y a rien à tracer.", "No cell of this table reaches 11 after noise: there is nothing to draw.")) }
            } @else {
                figure {
                    svg role="img" aria-labelledby={ (id) "-legende" } viewBox={ "0 0 640 " (height) } width="100%" xmlns="http://www.w3.org/2000/svg" {
                        @for (n, (k, v)) in bars.iter().enumerate() {
                            @let y = n as u64 * row_h;
                            @let w = (*v * 520 / max).max(1);
                            text x="0" y=(y + 12) font-size="12" fill="#1e1e1e" { (label(k)) }
                            rect x="0" y=(y + 16) width=(w) height="14" fill="#000091" {}
                            text x=(w + 6) y=(y + 28) font-size="12" fill="#1e1e1e" { (v) }
                        }
                    }
                    figcaption id={ (id) "-legende" } {
                        (l.t("Les ", "The ")) (bars.len()) (l.t(" plus grandes cases publiées ; le tableau ci-dessous donne les mêmes nombres.", " largest published cells; the table below gives the same numbers."))
                    }
                }
                div.defile { table {
                    caption { (l.t(title_fr, title_en)) (l.t(" : plus grandes cases", ": largest cells")) }
                    thead { tr {
                        @for d in t.table.dimensions() { th scope="col" { (l.t(d.fr, d.en)) } }
                        th scope="col" { (l.t("Nombre", "Count")) }
                    } }
                    tbody { @for (k, v) in &bars { tr { @for part in k.iter() { td { (part) } } td { (v) } } } }
                } }
            }
            p {
                (small) (l.t(" autres cases à « < 11 » ou « s ». ", " more cells at \"< 11\" or \"s\". "))
                a href={ "/api/v1/stats/releases/" (period) "/" (t.table.as_str()) ".csv" } { (l.t("Tout le tableau en CSV", "The whole table as CSV")) }
            }
        }
    }
}
