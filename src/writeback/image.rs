//! Image references as pod templates and kustomizations spell them: `repository[:tag][@digest]`.

/// An image reference split into its parts (no normalisation: `podinfo` and `docker.io/library/podinfo`
/// are different strings in git, and git is what is edited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef<'a> {
    pub repository: &'a str,
    pub tag: Option<&'a str>,
    pub digest: Option<&'a str>,
}

impl<'a> ImageRef<'a> {
    pub fn parse(image: &'a str) -> ImageRef<'a> {
        let (rest, digest) = match image.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (image, None),
        };
        // A colon after the last slash is the tag's; one before it is a registry's port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        match rest[last_slash..].rfind(':') {
            Some(i) => ImageRef {
                repository: &rest[..last_slash + i],
                tag: Some(&rest[last_slash + i + 1..]),
                digest,
            },
            None => ImageRef {
                repository: rest,
                tag: None,
                digest,
            },
        }
    }
}

/// Whether `value` may be written into a YAML scalar as it is, in any style: image references have no
/// quotes, backslashes, spaces or `#`, so neither quoting nor escaping can change.
pub fn is_plain_image(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/:@+".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_repository_tag_and_digest() {
        let r = ImageRef::parse("ghcr.io/stefanprodan/podinfo:6.0.2");
        assert_eq!(r.repository, "ghcr.io/stefanprodan/podinfo");
        assert_eq!(r.tag, Some("6.0.2"));
        assert_eq!(r.digest, None);
        let r = ImageRef::parse("localhost:5000/app");
        assert_eq!((r.repository, r.tag), ("localhost:5000/app", None));
        let r = ImageRef::parse("localhost:5000/app:1.2@sha256:abc");
        assert_eq!(
            (r.repository, r.tag, r.digest),
            ("localhost:5000/app", Some("1.2"), Some("sha256:abc"))
        );
        assert!(is_plain_image("ghcr.io/x/y:6.0.1"));
        assert!(!is_plain_image("x y"));
        assert!(!is_plain_image("a\"b"));
    }
}
