//! How domain values are kept in the database's text columns: one place
//! per type, for both backends. A stored text that is not a value of its
//! type is an integrity error (`StorageError::Integrity`), never a panic.
//!
//! Enums and ids bind and decode directly; lists (a structure's démarches,
//! a consent's categories) are comma-joined in their column and come out as
//! `Vec`s through the `try_from` wrappers of `FromRow`.

use std::fmt;

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode, Type};

use crate::domain::Demarche;
use crate::domain::category::Category;

/// A stored text that is not a value of its type. Names the type, not the
/// text.
#[derive(Debug)]
struct NotA(&'static str);

impl fmt::Display for NotA {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stored text is not a {}", self.0)
    }
}

impl std::error::Error for NotA {}

/// `sqlx` `Type`, `Encode` and `Decode` through a text column, for any
/// backend whose `String` is a text column.
macro_rules! text_column {
    ($ty:ty, $what:literal, |$v:ident| $to_text:expr, |$s:ident| $from_text:expr) => {
        impl<DB: Database> Type<DB> for $ty
        where
            String: Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <String as Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <String as Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: Database> Encode<'q, DB> for $ty
        where
            String: Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as Database>::ArgumentBuffer<'q>,
            ) -> Result<IsNull, BoxDynError> {
                let $v = self;
                <String as Encode<'q, DB>>::encode($to_text, buf)
            }
        }

        impl<'r, DB: Database> Decode<'r, DB> for $ty
        where
            String: Decode<'r, DB>,
        {
            fn decode(value: <DB as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
                let $s = <String as Decode<'r, DB>>::decode(value)?;
                let parsed: Option<$ty> = $from_text;
                parsed.ok_or_else(|| NotA($what).into())
            }
        }
    };
}

/// An enum with `as_str` and `parse(&str) -> Option<Self>`.
macro_rules! code_column {
    ($ty:ty, $what:literal) => {
        text_column!($ty, $what, |v| v.as_str().to_owned(), |s| <$ty>::parse(&s));
    };
}

/// An id of `domain::ids`.
macro_rules! id_column {
    ($ty:ty, $what:literal) => {
        text_column!($ty, $what, |v| v.as_str().to_owned(), |s| <$ty>::try_from(
            s
        )
        .ok());
    };
}

code_column!(crate::domain::Role, "role");
code_column!(Demarche, "démarche");
code_column!(crate::domain::consent::ConsentState, "consent state");
code_column!(
    crate::domain::rights::RightsRequestKind,
    "rights request kind"
);
code_column!(
    crate::domain::rights::RightsRequestState,
    "rights request state"
);
code_column!(crate::domain::rights::NoticeKind, "notice kind");
code_column!(crate::domain::extract::ExtractKind, "extract kind");
code_column!(crate::domain::extract::ExtractState, "extract state");
code_column!(crate::domain::notice::NoticeEvent, "notice event");
code_column!(crate::domain::notice::Channel, "notice channel");
code_column!(crate::domain::alert::AlertKind, "alert kind");
text_column!(
    crate::domain::alert::Communes,
    "communes",
    |v| v.as_text(),
    |s| crate::domain::alert::Communes::parse(&s)
);
text_column!(Category, "category", |v| v.as_str().to_owned(), |s| {
    Category::recorded(&s)
});

id_column!(crate::domain::ResidentId, "resident id");
id_column!(crate::domain::PurposeId, "purpose id");
id_column!(crate::domain::Pseudonym, "pseudonym");
id_column!(crate::domain::ConsentId, "consent id");
id_column!(crate::domain::MandateId, "mandate id");
id_column!(crate::domain::PartnerId, "partner id");
id_column!(crate::domain::AgentId, "agent id");
id_column!(crate::domain::StructureId, "structure id");
id_column!(crate::domain::ExtractId, "extract id");
id_column!(crate::domain::RightsRequestId, "rights request id");
id_column!(crate::domain::DraftId, "draft id");

/// A comma-joined list of démarches, as a row's `try_from` column: decoded
/// here, turned into the row's `Vec<Demarche>` by `From`.
pub struct DemarcheList(Vec<Demarche>);

/// A comma-joined list of data categories, as a row's `try_from` column.
pub struct CategoryList(Vec<Category>);

/// The non-empty items of a comma-joined column, each parsed.
fn items<T>(s: &str, parse: impl Fn(&str) -> Option<T>) -> Option<Vec<T>> {
    s.split(',').filter(|x| !x.is_empty()).map(parse).collect()
}

text_column!(DemarcheList, "list of démarches", |v| joined(&v.0), |s| {
    items(&s, Demarche::parse).map(DemarcheList)
});
text_column!(CategoryList, "list of categories", |v| joined(&v.0), |s| {
    items(&s, Category::recorded).map(CategoryList)
});

impl From<DemarcheList> for Vec<Demarche> {
    fn from(l: DemarcheList) -> Self {
        l.0
    }
}

impl From<CategoryList> for Vec<Category> {
    fn from(l: CategoryList) -> Self {
        l.0
    }
}

/// A value of a list column, as it is written: its items' codes, in order,
/// joined by commas.
pub trait Code {
    fn code(&self) -> &str;
}

impl Code for Demarche {
    fn code(&self) -> &str {
        self.as_str()
    }
}

impl Code for Category {
    fn code(&self) -> &str {
        self.as_str()
    }
}

pub fn joined<T: Code>(items: &[T]) -> String {
    let mut out = String::new();
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(x.code());
    }
    out
}
