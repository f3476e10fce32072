//! The territory (`policies/territory.toml`): the agglomération's communes
//! by INSEE code, the public domain of every count by commune. Loaded and
//! validated at start beside the register; a bad entry stops the start
//! naming it.

use serde::Deserialize;

use super::category::is_insee_code;

pub const BUILTIN_TERRITORY: &str = include_str!("../../policies/territory.toml");

/// One commune of the territory.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commune {
    pub insee: String,
    pub name: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TerritoryFile {
    name: String,
    #[serde(default)]
    commune: Vec<Commune>,
}

/// The territory: a name and at least one commune, each INSEE code valid
/// and listed once, in the file's order.
#[derive(Clone, Debug)]
pub struct Territory {
    pub name: String,
    communes: Vec<Commune>,
}

impl Territory {
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: TerritoryFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.name.trim().is_empty() {
            return Err("the territory needs a name".into());
        }
        if file.commune.is_empty() {
            return Err("the territory lists no commune".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for c in &file.commune {
            if !is_insee_code(&c.insee) {
                return Err(format!("commune `{}`: not an INSEE code", c.insee));
            }
            if c.name.trim().is_empty() {
                return Err(format!("commune `{}`: no name", c.insee));
            }
            if !seen.insert(c.insee.as_str()) {
                return Err(format!("commune `{}` is listed twice", c.insee));
            }
        }
        Ok(Self {
            name: file.name,
            communes: file.commune,
        })
    }

    pub fn builtin() -> Result<Self, String> {
        Self::parse(BUILTIN_TERRITORY)
    }

    pub fn communes(&self) -> &[Commune] {
        &self.communes
    }

    pub fn contains(&self, insee: &str) -> bool {
        self.communes.iter().any(|c| c.insee == insee)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_territory_is_the_seeded_one() {
        let t = Territory::builtin().unwrap();
        assert_eq!(t.communes().len(), 36);
        assert!(t.contains("31901") && t.contains("31936") && !t.contains("31937"));
    }

    #[test]
    fn a_bad_territory_is_refused_naming_the_commune() {
        let one = |insee: &str, name: &str| {
            format!("name = \"T\"\n[[commune]]\ninsee = \"{insee}\"\nname = \"{name}\"\n")
        };
        assert!(
            Territory::parse(&one("3190", "x"))
                .unwrap_err()
                .contains("3190")
        );
        assert!(
            Territory::parse(&one("31901", " "))
                .unwrap_err()
                .contains("31901")
        );
        let twice = format!(
            "{}[[commune]]\ninsee = \"31901\"\nname = \"y\"\n",
            one("31901", "x")
        );
        assert!(Territory::parse(&twice).unwrap_err().contains("twice"));
        assert!(
            Territory::parse("name = \"T\"\n")
                .unwrap_err()
                .contains("no commune")
        );
        assert!(Territory::parse(&format!("{}extra = 1\n", one("31901", "x"))).is_err());
    }
}
