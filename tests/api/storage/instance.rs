//! InstanceStore: liveness, blankness and the instance's marks.

use super::{T0, each_store, on, partner};

#[tokio::test]
async fn a_fresh_store_is_blank_until_someone_registers_and_a_mark_is_set_once() {
    each_store(|store| async move {
        let b = on(&store);
        store.ping().await.unwrap();
        assert!(store.is_blank().await.unwrap(), "{b}");
        assert!(!store.has_instance_mark("demo").await.unwrap(), "{b}");

        store.set_instance_mark("demo", T0).await.unwrap();
        // Setting it again is not an error (every demo start sets it).
        store.set_instance_mark("demo", T0 + 1).await.unwrap();
        assert!(store.has_instance_mark("demo").await.unwrap(), "{b}");
        assert!(!store.has_instance_mark("other").await.unwrap(), "{b}");
        assert!(
            store.is_blank().await.unwrap(),
            "a mark registers nobody ({b})"
        );

        // A partner alone is enough to make the instance not blank.
        store.insert_partner(&partner("p1"), T0).await.unwrap();
        assert!(!store.is_blank().await.unwrap(), "{b}");
    })
    .await;
}
