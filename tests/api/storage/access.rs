//! AccessStore: what a partner's read of one category of one resident
//! needs, read in one statement.

use coffre::storage::PartnerReadFacts;

use super::{Decision, T0, data_keys, each_store, on, partner, record, residents};

#[tokio::test]
async fn a_partner_read_gathers_partner_resident_consent_rights_and_record_at_once() {
    each_store(|store| async move {
        let b = on(&store);
        store.insert_partner(&partner("p1"), T0).await.unwrap();
        let mut off = partner("p2");
        off.active = false;
        store.insert_partner(&off, T0).await.unwrap();
        residents(&store, &["awa", "basile"]).await;
        data_keys(&store, &["awa"]).await;
        store
            .insert_record(
                &crate::support::resident_id("awa"),
                &record("c1", "contact", 1, T0),
                &[],
            )
            .await
            .unwrap();
        store
            .insert_record(
                &crate::support::resident_id("awa"),
                &record("c2", "contact", 2, T0 + 1),
                &[],
            )
            .await
            .unwrap();
        Decision::new("awa", "p-consent", "given")
            .record(&store, None, 1)
            .await
            .unwrap();

        let read = store
            .partner_read(
                &crate::support::pid("p1"),
                &crate::support::resident_id("awa"),
                Some(&crate::support::purpose_id("p-consent")),
                "contact",
            )
            .await
            .unwrap();
        assert!(read.partner_active, "{b}");
        let facts = &read.facts;
        assert_eq!(
            (
                facts.resident_id.as_str(),
                facts.purpose.as_ref().map(|p| p.as_str())
            ),
            ("awa", Some("p-consent"))
        );
        assert!(
            facts.resident_active && !facts.restricted && !facts.objected,
            "{b}"
        );
        let consent = facts.consent.as_ref().unwrap();
        assert_eq!(
            (
                consent.state.as_str(),
                crate::support::joined(&consent.categories).as_str()
            ),
            ("given", "contact")
        );
        assert_eq!(
            (consent.valid_until, consent.notice_version.as_str()),
            (Some(T0 + 1000), "v1")
        );
        let rec = read.record.as_ref().unwrap();
        assert_eq!(
            (rec.id.as_str(), rec.version, rec.kek_version),
            ("c2", 2, 1),
            "latest ({b})"
        );
        assert_eq!(rec.wrapped, b"wrapped-awa", "{b}");
        assert_eq!(rec.sealed, b"sealed-c2", "{b}");

        // The facts alone read the same.
        let alone = store
            .partner_read_facts(
                &crate::support::resident_id("awa"),
                Some(&crate::support::purpose_id("p-consent")),
            )
            .await
            .unwrap();
        assert_eq!(format!("{alone:?}"), format!("{facts:?}"), "{b}");

        // An inactive partner still gets the facts (the decision refuses it);
        // an unknown one gets nothing.
        let inactive = store
            .partner_read(
                &crate::support::pid("p2"),
                &crate::support::resident_id("awa"),
                Some(&crate::support::purpose_id("p-consent")),
                "contact",
            )
            .await
            .unwrap();
        assert!(
            !inactive.partner_active && inactive.facts.resident_active,
            "{b}"
        );
        let unknown = store
            .partner_read(
                &crate::support::pid("p9"),
                &crate::support::resident_id("awa"),
                Some(&crate::support::purpose_id("p-consent")),
                "contact",
            )
            .await
            .unwrap();
        assert!(
            !unknown.partner_active && !unknown.facts.resident_active,
            "{b}"
        );
        assert!(
            unknown.facts.consent.is_none() && unknown.record.is_none(),
            "{b}"
        );

        // No record of the category, no consent for the purpose, no resident.
        let none = store
            .partner_read(
                &crate::support::pid("p1"),
                &crate::support::resident_id("awa"),
                Some(&crate::support::purpose_id("p-other")),
                "housing",
            )
            .await
            .unwrap();
        assert!(none.facts.consent.is_none() && none.record.is_none(), "{b}");
        let nobody = store
            .partner_read(
                &crate::support::pid("p1"),
                &crate::support::resident_id("ghost"),
                Some(&crate::support::purpose_id("p-consent")),
                "contact",
            )
            .await
            .unwrap();
        assert!(
            nobody.partner_active && !nobody.facts.resident_active,
            "{b}"
        );
        let empty = PartnerReadFacts::unknown_resident(
            &crate::support::resident_id("ghost"),
            Some(&crate::support::purpose_id("p-consent")),
        );
        assert_eq!(format!("{:?}", nobody.facts), format!("{empty:?}"), "{b}");
        let basile = store
            .partner_read(
                &crate::support::pid("p1"),
                &crate::support::resident_id("basile"),
                Some(&crate::support::purpose_id("p-consent")),
                "contact",
            )
            .await
            .unwrap();
        assert!(
            basile.facts.resident_active && basile.record.is_none(),
            "no key yet ({b})"
        );

        // Restriction and objection (to this purpose only) show.
        store
            .set_restricted(&crate::support::resident_id("awa"), Some(T0), &[])
            .await
            .unwrap();
        store
            .add_objection(
                &crate::support::resident_id("awa"),
                coffre::domain::rights::ObjectionTo::Purpose(&crate::support::purpose_id(
                    "p-consent",
                )),
                T0,
            )
            .await
            .unwrap();
        let read = store
            .partner_read(
                &crate::support::pid("p1"),
                &crate::support::resident_id("awa"),
                Some(&crate::support::purpose_id("p-consent")),
                "contact",
            )
            .await
            .unwrap();
        assert!(read.facts.restricted && read.facts.objected, "{b}");
        let other = store
            .partner_read_facts(
                &crate::support::resident_id("awa"),
                Some(&crate::support::purpose_id("p-other")),
            )
            .await
            .unwrap();
        assert!(other.restricted && !other.objected, "{b}");

        // After the erasure: inactive, the consent withdrawn, no record.
        store
            .erase_resident(&crate::support::resident_id("awa"), T0 + 5, &[])
            .await
            .unwrap();
        let read = store
            .partner_read(
                &crate::support::pid("p1"),
                &crate::support::resident_id("awa"),
                Some(&crate::support::purpose_id("p-consent")),
                "contact",
            )
            .await
            .unwrap();
        assert!(!read.facts.resident_active && read.record.is_none(), "{b}");
        assert_eq!(
            read.facts.consent.unwrap().state.as_str(),
            "withdrawn",
            "{b}"
        );
    })
    .await;
}
