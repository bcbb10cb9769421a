//! The grant part of [`CacheKey`](super::CacheKey): keys of different grants differ, and
//! their encoding stays unambiguous.

use super::*;

fn key() -> CacheKey {
    CacheKey::new(
        "https://as.example",
        &ResourceUri::parse("https://rs.example/mcp").unwrap(),
        &ScopeSet::parse("a b").unwrap(),
        "client",
    )
}

#[test]
fn keys_of_different_grants_differ_and_encode_apart() {
    let client = key();
    let workload = key().obtained_by(GrantPart::JwtBearer);
    let idp_a = key().obtained_by(GrantPart::IdJag("https://idp-a.example".into()));
    let idp_b = key().obtained_by(GrantPart::IdJag("https://idp-b.example".into()));
    let exchanged = key().exchanged(SubjectKey::random().fingerprint("t", b"token"));
    let all = [&client, &workload, &idp_a, &idp_b, &exchanged];
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert_ne!(a, b);
            assert_ne!(a.encoded(), b.encoded());
        }
    }
    assert_eq!(client.grant(), "client");
    assert_eq!(workload.grant(), "jwt-bearer");
    assert_eq!(idp_a.grant(), "id-jag");
    assert_eq!(exchanged.grant(), "token exchange");
    assert!(!client.stays_in_process());
    assert!(workload.stays_in_process() && idp_a.stays_in_process());
    // Carried through the other derivations.
    let scoped = idp_a.with_scopes(&ScopeSet::empty()).with_account("alice");
    assert_eq!(scoped.grant(), "id-jag");
    assert_eq!(
        scoped,
        key()
            .with_account("alice")
            .with_scopes(&ScopeSet::empty())
            .obtained_by(GrantPart::IdJag("https://idp-a.example".into()))
    );
    // The layout: version 4; after the account flag, the tag and the IdP length-prefixed.
    assert_eq!(idp_a.encoded()[0], 4);
    let idp = b"https://idp-a.example";
    assert_eq!(
        idp_a.encoded().len(),
        client.encoded().len() + 8 + idp.len()
    );
    let tail = &idp_a.encoded()[client.encoded().len() - 4..];
    assert_eq!(tail[0], 0, "no account");
    assert_eq!(tail[1], 3, "the ID-JAG tag");
    assert_eq!(&tail[2..10], &(idp.len() as u64).to_be_bytes());
    assert_eq!(&tail[10..10 + idp.len()], idp);
    assert_eq!(&tail[10 + idp.len()..], &[0, 0], "no subject, no DPoP key");
    // An IdP issuer cannot borrow bytes from the parts around it.
    assert_ne!(
        key()
            .obtained_by(GrantPart::IdJag("a".into()))
            .with_dpop("b")
            .encoded(),
        key().obtained_by(GrantPart::IdJag("ab".into())).encoded()
    );
    assert!(format!("{idp_a}").contains("by ID-JAG from \"https://idp-a.example\""));
    assert!(format!("{workload}").contains("by jwt-bearer grant"));
}
