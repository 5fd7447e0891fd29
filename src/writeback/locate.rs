//! Where in the repository each failed image is written, and the compare-and-swap on its value: the
//! locator never guesses. In this order, the first that finds any wins:
//! 1. a Serin marker on the line: `# {"$serin": "<namespace>:<canary>"}` (survives any layout; a third
//!    part names the container when several change);
//! 2. a kustomization's `images:` entry for the image's repository, in the directory of the target's
//!    manifest or one above it up to the path (kustomize's transformer overrides the Deployment's field
//!    there, so the entry is what decides the image; another app's kustomization elsewhere under the path
//!    is not the target's);
//! 3. the target's manifest: the document of its kind and name in the file Flux's origin annotation names,
//!    else in any file under the path, and its container's `image:`.
//!
//! None or several sites for one image: no commit, and the outcome lists what was found.

use std::collections::BTreeMap;
use std::ops::Range;

use super::image::{ImageRef, is_plain_image};
use super::yaml::{self, Node};
use crate::api::write_back::ImageChange;

/// What the write-back looks for.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    pub canary_namespace: &'a str,
    pub canary_name: &'a str,
    /// The target's kind and name, as its manifests say.
    pub kind: &'a str,
    pub name: &'a str,
    /// The file the target came from (Flux's origin annotation, joined to the Kustomization's path).
    pub origin: Option<&'a str>,
    /// The directory searched ("" for the repository's root).
    pub root: &'a str,
    pub changes: &'a [ImageChange],
}

/// How a site spells the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spelling {
    /// The whole reference.
    Full,
    /// The tag alone (kustomize's newTag, a Helm value, a marked tag).
    Tag,
    /// The digest alone (kustomize's digest).
    Digest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Site {
    file: String,
    span: Range<usize>,
    line: usize,
    value: String,
    spelling: Spelling,
    how: &'static str,
    /// Written without quotes.
    plain: bool,
}

impl Site {
    fn describe(&self) -> String {
        format!("{}:{} ({}: {})", self.file, self.line, self.how, self.value)
    }
}

/// What became of one container's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// Git says the failed image here: this edit restores it.
    Edit {
        file: String,
        line: usize,
        span: Range<usize>,
        old: String,
        new: String,
        how: &'static str,
    },
    /// Git already says the restored image.
    UpToDate {
        file: String,
        line: usize,
    },
    /// Git says something else: someone moved on.
    Superseded {
        file: String,
        line: usize,
        value: String,
    },
    NotFound(String),
    Ambiguous(Vec<String>),
}

/// Each change's outcome, in the order of the changes.
pub fn locate(files: &BTreeMap<String, String>, q: &Query) -> Vec<(ImageChange, Located)> {
    let parsed: BTreeMap<&str, Vec<Node>> = files
        .iter()
        .filter_map(|(path, text)| Some((path.as_str(), yaml::documents(text).ok()?)))
        .collect();
    q.changes
        .iter()
        .map(|change| (change.clone(), locate_one(files, &parsed, q, change)))
        .collect()
}

fn locate_one(
    files: &BTreeMap<String, String>,
    parsed: &BTreeMap<&str, Vec<Node>>,
    q: &Query,
    change: &ImageChange,
) -> Located {
    if !is_plain_image(&change.to) {
        return Located::NotFound(format!(
            "the restored image {:?} is not a plain image reference",
            change.to
        ));
    }
    let pick = |sites: &[Site]| match sites {
        [] => None,
        [site] => Some(judge(site, change)),
        several => Some(Located::Ambiguous(
            several.iter().map(Site::describe).collect(),
        )),
    };
    if let Some(found) = pick(&markers(files, parsed, q, change)) {
        return found;
    }
    let manifest = match q.origin {
        Some(origin) => manifests(files, parsed, q, change, Some(origin)),
        None => Vec::new(),
    };
    let manifest = if manifest.is_empty() {
        manifests(files, parsed, q, change, None)
    } else {
        manifest
    };
    // The kustomizations that build the manifest: its directory's and those above it, up to the root.
    let mut dirs = vec![q.root.trim_matches('/').to_string()];
    if let [site] = manifest.as_slice() {
        let mut dir = site
            .file
            .rsplit_once('/')
            .map_or("", |(d, _)| d)
            .to_string();
        loop {
            if !dirs.contains(&dir) {
                dirs.push(dir.clone());
            }
            if dir.len() <= q.root.trim_matches('/').len() {
                break;
            }
            dir = dir.rsplit_once('/').map_or("", |(d, _)| d).to_string();
        }
    }
    if let Some(found) = pick(&kustomize_images(files, parsed, change, &dirs)) {
        return found;
    }
    if let Some(found) = pick(&manifest) {
        return found;
    }
    Located::NotFound(format!(
        "container {} ({}) in {} files: no marker {{\"$serin\": \"{}:{}\"}}, no kustomization images: entry for {}, {}no {} {} with that container",
        change.container,
        change.from,
        files.len(),
        q.canary_namespace,
        q.canary_name,
        ImageRef::parse(&change.from).repository,
        q.origin
            .map(|o| format!("nothing in {o} (the origin annotation's file), "))
            .unwrap_or_default(),
        q.kind,
        q.name,
    ))
}

/// The compare-and-swap: the value git holds against the failed and the restored image.
fn judge(site: &Site, change: &ImageChange) -> Located {
    let (from, to) = (ImageRef::parse(&change.from), ImageRef::parse(&change.to));
    let (old, new) = match site.spelling {
        Spelling::Full => (Some(change.from.as_str()), Some(change.to.as_str())),
        Spelling::Tag => (from.tag, to.tag),
        Spelling::Digest => (from.digest, to.digest),
    };
    let (Some(old), Some(new)) = (old, new) else {
        return Located::NotFound(format!(
            "{} holds a {} but {} → {} does not change one",
            site.describe(),
            match site.spelling {
                Spelling::Tag => "tag",
                _ => "digest",
            },
            change.from,
            change.to
        ));
    };
    if site.spelling != Spelling::Full && from.repository != to.repository {
        return Located::NotFound(format!(
            "{} holds the tag alone, but the repository changes too ({} → {})",
            site.describe(),
            from.repository,
            to.repository
        ));
    }
    if site.value == new {
        Located::UpToDate {
            file: site.file.clone(),
            line: site.line,
        }
    } else if site.value == old {
        // A plain 6.0.2 is a string, a plain 1.10 a number: a restored value YAML would read as
        // anything but a string is written quoted.
        let new = if site.plain && yaml::reads_as_non_string(new) {
            format!("\"{new}\"")
        } else {
            new.to_string()
        };
        Located::Edit {
            file: site.file.clone(),
            line: site.line,
            span: site.span.clone(),
            old: old.to_string(),
            new,
            how: site.how,
        }
    } else {
        Located::Superseded {
            file: site.file.clone(),
            line: site.line,
            value: site.value.clone(),
        }
    }
}

fn site(
    file: &str,
    text: &str,
    node: &Node,
    spelling: Spelling,
    how: &'static str,
) -> Option<Site> {
    let Node::Scalar {
        value, span, style, ..
    } = node
    else {
        return None;
    };
    Some(Site {
        plain: matches!(style, granit_parser::ScalarStyle::Plain),
        file: file.to_string(),
        line: yaml::line_of(text, span.start),
        span: span.clone(),
        value: value.clone(),
        spelling,
        how,
    })
}

/// The canary a marker on this line names: `{"$serin": "<ns>:<canary>[:<container>]"}`.
fn marker(line_rest: &str) -> Option<(String, String, Option<String>)> {
    let start = line_rest.find('{')?;
    let end = line_rest[start..].find('}')? + start;
    let json: serde_json::Value = serde_json::from_str(&line_rest[start..=end]).ok()?;
    let mut parts = json.get("$serin")?.as_str()?.splitn(3, ':');
    Some((
        parts.next()?.to_string(),
        parts.next()?.to_string(),
        parts.next().map(String::from),
    ))
}

fn markers(
    files: &BTreeMap<String, String>,
    parsed: &BTreeMap<&str, Vec<Node>>,
    q: &Query,
    change: &ImageChange,
) -> Vec<Site> {
    let mut sites = Vec::new();
    let (from, to) = (ImageRef::parse(&change.from), ImageRef::parse(&change.to));
    for (file, docs) in parsed {
        let text = &files[*file];
        if !text.contains("$serin") {
            continue;
        }
        let mut scalars = Vec::new();
        docs.iter().for_each(|d| d.scalars(&mut scalars));
        for node in scalars {
            let Node::Scalar { value, span, .. } = node else {
                continue;
            };
            let Some((ns, canary, container)) = marker(yaml::rest_of_line(text, span.end)) else {
                continue;
            };
            if ns != q.canary_namespace || canary != q.canary_name {
                continue;
            }
            if container.as_ref().is_some_and(|c| *c != change.container) {
                continue;
            }
            // Which of this change's spellings the marked value is; with several changes and no
            // container named, a value that is neither image's belongs to none of them.
            let parsed_value = ImageRef::parse(value);
            let spelling = if parsed_value.repository == from.repository
                || parsed_value.repository == to.repository
            {
                Spelling::Full
            } else if value.starts_with("sha256:") {
                Spelling::Digest
            } else {
                Spelling::Tag
            };
            let mine = container.is_some()
                || q.changes.len() == 1
                || match spelling {
                    Spelling::Full => true,
                    Spelling::Tag => {
                        Some(value.as_str()) == from.tag || Some(value.as_str()) == to.tag
                    }
                    Spelling::Digest => {
                        Some(value.as_str()) == from.digest || Some(value.as_str()) == to.digest
                    }
                };
            if mine {
                sites.extend(site(file, text, node, spelling, "marker"));
            }
        }
    }
    sites
}

fn is_kustomization(file: &str) -> bool {
    let base = file.rsplit('/').next().unwrap_or(file);
    matches!(
        base,
        "kustomization.yaml" | "kustomization.yml" | "Kustomization"
    )
}

fn kustomize_images(
    files: &BTreeMap<String, String>,
    parsed: &BTreeMap<&str, Vec<Node>>,
    change: &ImageChange,
    dirs: &[String],
) -> Vec<Site> {
    let repository = ImageRef::parse(&change.from).repository;
    let mut sites = Vec::new();
    let in_dirs = |f: &str| {
        let dir = f.rsplit_once('/').map_or("", |(d, _)| d);
        dirs.iter().any(|d| d == dir)
    };
    for (file, docs) in parsed
        .iter()
        .filter(|(f, _)| is_kustomization(f) && in_dirs(f))
    {
        let text = &files[*file];
        for entry in docs
            .iter()
            .flat_map(|d| d.get("images").map(Node::items).unwrap_or_default())
        {
            let named = entry
                .get("newName")
                .and_then(Node::as_str)
                .unwrap_or_else(|| entry.get("name").and_then(Node::as_str).unwrap_or_default());
            if named != repository {
                continue;
            }
            if let Some(digest) = entry.get("digest") {
                sites.extend(site(
                    file,
                    text,
                    digest,
                    Spelling::Digest,
                    "kustomization digest",
                ));
            } else if let Some(tag) = entry.get("newTag") {
                sites.extend(site(file, text, tag, Spelling::Tag, "kustomization newTag"));
            }
        }
    }
    sites
}

fn manifests(
    files: &BTreeMap<String, String>,
    parsed: &BTreeMap<&str, Vec<Node>>,
    q: &Query,
    change: &ImageChange,
    only: Option<&str>,
) -> Vec<Site> {
    let mut sites = Vec::new();
    for (file, docs) in parsed {
        if only.is_some_and(|o| o != *file) {
            continue;
        }
        let text = &files[*file];
        for doc in docs {
            if doc.get("kind").and_then(Node::as_str) != Some(q.kind)
                || doc.path(&["metadata", "name"]).and_then(Node::as_str) != Some(q.name)
            {
                continue;
            }
            let Some(pod) = doc.path(&["spec", "template", "spec"]) else {
                continue;
            };
            for list in ["initContainers", "containers"] {
                for c in pod.get(list).map(Node::items).unwrap_or_default() {
                    if c.get("name").and_then(Node::as_str) == Some(change.container.as_str())
                        && let Some(image) = c.get("image")
                    {
                        let how = if only.is_some() {
                            "origin annotation"
                        } else {
                            "manifest"
                        };
                        sites.extend(site(file, text, image, Spelling::Full, how));
                    }
                }
            }
        }
    }
    sites
}

/// The files with every edit made; Err names an edit that could not be made as planned.
pub fn apply_edits(
    files: &BTreeMap<String, String>,
    outcomes: &[(ImageChange, Located)],
) -> Result<BTreeMap<String, String>, String> {
    let mut edits: Vec<(&str, &Range<usize>, &str, &str)> = outcomes
        .iter()
        .filter_map(|(_, l)| match l {
            Located::Edit {
                file,
                span,
                old,
                new,
                ..
            } => Some((file.as_str(), span, old.as_str(), new.as_str())),
            _ => None,
        })
        .collect();
    // From the end of each file backwards, so earlier spans stay where they were.
    edits.sort_by(|a, b| {
        (a.0, std::cmp::Reverse(a.1.start)).cmp(&(b.0, std::cmp::Reverse(b.1.start)))
    });
    edits.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    let mut changed: BTreeMap<String, String> = BTreeMap::new();
    for (file, span, old, new) in edits {
        let text = changed.get(file).unwrap_or(&files[file]);
        let next = yaml::splice(text, span, old, new).ok_or_else(|| {
            format!(
                "{file}: {old} is not written verbatim at byte {}",
                span.start
            )
        })?;
        changed.insert(file.to_string(), next);
    }
    Ok(changed)
}
