//! The README and the book under `docs/`: the README stays a short front door with the two
//! commands, the book builds with mdBook, and every relative link and `#anchor` in either
//! resolves — to a file that exists and, for an anchor, to a heading (or an explicit `id`) in
//! it.
//!
//! Links are read with pulldown-cmark, the parser mdBook itself uses, with mdBook's extensions,
//! so a link in a code block or a code span is no link, and reference links are resolved.

use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

/// The version `scripts/test.sh` installs.
const MDBOOK_INSTALL: &str = "cargo install mdbook --locked --version 0.5.4 --no-default-features";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The book's sources: `docs/src`.
fn book_src() -> PathBuf {
    root().join("docs/src")
}

/// The README and every `.md` under `docs/` except mdBook's output (`docs/book/`).
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                if path != root().join("docs/book") {
                    walk(&path, out);
                }
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut files = vec![root().join("README.md")];
    walk(&root().join("docs"), &mut files);
    files
}

/// mdBook's markdown extensions (smart punctuation and definition lists are off in
/// `docs/book.toml`, so the text reads the same on GitHub).
fn options() -> Options {
    Options::ENABLE_TABLES
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_HEADING_ATTRIBUTES
        | Options::ENABLE_GFM
}

/// A heading's anchor as mdBook (and, for this text, GitHub) makes it: lowercase, whitespace
/// to `-`, letters, digits, `-` and `_` kept, everything else dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            c if c.is_whitespace() => Some('-'),
            _ => None,
        })
        .collect()
}

/// The values of `name="..."` (or `'...'`) attributes in a piece of raw HTML.
fn html_attributes(html: &str, name: &str) -> Vec<String> {
    let mut values = Vec::new();
    let lower = html.to_ascii_lowercase();
    let pattern = format!("{name}=");
    let mut from = 0;
    while let Some(at) = lower[from..].find(&pattern).map(|i| from + i) {
        from = at + pattern.len();
        // `id=` in `data-id=` is not an id.
        if !lower[..at].ends_with(|c: char| c.is_ascii_whitespace()) {
            continue;
        }
        let Some(quote) = html[from..]
            .chars()
            .next()
            .filter(|c| *c == '"' || *c == '\'')
        else {
            continue;
        };
        if let Some(len) = html[from + 1..].find(quote) {
            values.push(html[from + 1..from + 1 + len].to_owned());
        }
    }
    values
}

/// A link (or image) in a markdown file: where it points and the line it is on.
#[derive(Debug)]
struct Link {
    target: String,
    line: usize,
}

/// What one markdown file offers and asks for.
#[derive(Debug, Default)]
struct Doc {
    anchors: HashSet<String>,
    links: Vec<Link>,
}

fn read_doc(text: &str) -> Doc {
    let line_of = |offset: usize| text[..offset].matches('\n').count() + 1;
    let mut doc = Doc::default();
    // The text of the heading being read, and its explicit `{#id}` if it has one.
    let mut heading: Option<(String, Option<String>)> = None;
    for (event, range) in Parser::new_ext(text, options()).into_offset_iter() {
        match event {
            Event::Start(Tag::Heading { id, .. }) => {
                heading = Some((String::new(), id.map(|id| id.to_string())));
            }
            Event::End(TagEnd::Heading(_)) => {
                let (words, id) = heading.take().expect("a heading ends after it starts");
                let anchor = match id {
                    Some(id) => id,
                    None => {
                        // A second heading of the same words gets `-1`, a third `-2`, ...
                        let base = slug(&words);
                        let mut anchor = base.clone();
                        let mut n = 0;
                        while doc.anchors.contains(&anchor) {
                            n += 1;
                            anchor = format!("{base}-{n}");
                        }
                        anchor
                    }
                };
                doc.anchors.insert(anchor);
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some((words, _)) = heading.as_mut() {
                    words.push_str(&t);
                }
            }
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                doc.links.push(Link {
                    target: dest_url.to_string(),
                    line: line_of(range.start),
                });
            }
            Event::Html(html) | Event::InlineHtml(html) => {
                doc.anchors.extend(html_attributes(&html, "id"));
                doc.anchors.extend(html_attributes(&html, "name"));
                for attribute in ["href", "src"] {
                    doc.links
                        .extend(
                            html_attributes(&html, attribute)
                                .into_iter()
                                .map(|target| Link {
                                    target,
                                    line: line_of(range.start),
                                }),
                        );
                }
            }
            _ => {}
        }
    }
    doc
}

/// `a/./b/../c` as `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// Every relative link and anchor in `files` that does not resolve, one line each
/// (`file:line: link: why`). Links with a scheme (`https:`, `mailto:`) are not followed.
fn broken_links(files: &[PathBuf], book_src: &Path) -> Vec<String> {
    fn doc_of<'a>(docs: &'a mut BTreeMap<PathBuf, Doc>, path: &Path) -> Option<&'a Doc> {
        if !docs.contains_key(path) {
            let text = std::fs::read_to_string(path).ok()?;
            docs.insert(path.to_owned(), read_doc(&text));
        }
        docs.get(path)
    }
    let mut docs = BTreeMap::new();
    let mut broken = Vec::new();
    for file in files {
        let links = match doc_of(&mut docs, file) {
            Some(doc) => doc
                .links
                .iter()
                .map(|l| (l.target.clone(), l.line))
                .collect::<Vec<_>>(),
            None => {
                broken.push(format!("{}: cannot be read", file.display()));
                continue;
            }
        };
        let shown = file
            .strip_prefix(root())
            .unwrap_or(file)
            .display()
            .to_string();
        for (target, line) in links {
            let mut fail = |why: &str| broken.push(format!("{shown}:{line}: ({target}): {why}"));
            let scheme = target
                .split_once(':')
                .is_some_and(|(s, _)| !s.is_empty() && !s.contains(['/', '#', '.']));
            if scheme {
                continue;
            }
            if target.starts_with('/') {
                fail("an absolute path: write it relative to this file");
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                normalize(&file.parent().unwrap().join(path))
            };
            if !resolved.exists() {
                fail(&format!("{} does not exist", resolved.display()));
                continue;
            }
            // mdBook turns a chapter's link to `X.md` into `X.html`: one to a markdown file
            // outside the book would point at a page that is never made.
            if file.starts_with(book_src)
                && !resolved.starts_with(book_src)
                && resolved.extension().is_some_and(|e| e == "md")
            {
                fail(
                    "a book chapter links to markdown outside the book, which mdBook does not render",
                );
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if resolved.extension().is_none_or(|e| e != "md") {
                fail("an anchor into a file that is not markdown cannot be checked");
                continue;
            }
            let anchors = &doc_of(&mut docs, &resolved).expect("it exists").anchors;
            if !anchors.contains(anchor) {
                let mut known: Vec<_> = anchors.iter().map(String::as_str).collect();
                known.sort();
                fail(&format!(
                    "no heading or id makes #{anchor}; there are: {known:?}"
                ));
            }
        }
    }
    broken
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let files = markdown_files();
    assert!(
        files.len() > 10,
        "the book's chapters were not found: {files:?}"
    );
    let broken = broken_links(&files, &book_src());
    assert!(
        broken.is_empty(),
        "{} broken link(s):\n{}",
        broken.len(),
        broken.join("\n")
    );
}

#[test]
fn the_link_checker_catches_a_missing_file_and_a_wrong_anchor() {
    let dir = std::env::temp_dir().join(format!("tcpool-links-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let page = dir.join("src/page.md");
    std::fs::write(
        &page,
        "# A page\n\n## The `--flag`: what it does\n\n<a id=\"explicit\"></a>\n\n\
         Good: [one](#the---flag-what-it-does), [two](other.md#second-1), [three](#explicit),\n\
         [four](other.md), [web](https://example.org/x.md#nothing-here).\n\n\
         `[not a link](nowhere.md)` and\n\n```text\n[nor this](nowhere.md)\n```\n\n\
         Bad: [gone](missing.md), [wrong](other.md#third), [self](#a-pag),\n\
         [outside](../outside.md), [absolute](/etc/passwd).\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("src/other.md"),
        "# Other\n\n## Second\n\n## Second\n",
    )
    .unwrap();
    std::fs::write(dir.join("outside.md"), "# Outside\n").unwrap();
    let broken = broken_links(&[page], &dir.join("src"));
    let _ = std::fs::remove_dir_all(&dir);
    let targets: Vec<_> = broken
        .iter()
        .map(|b| b.split(['(', ')']).nth(1).unwrap_or(b))
        .collect();
    assert_eq!(
        targets,
        [
            "missing.md",
            "other.md#third",
            "#a-pag",
            "../outside.md",
            "/etc/passwd"
        ],
        "{broken:#?}"
    );
    assert!(broken[0].contains("page.md:16:"), "{broken:#?}");
}

#[test]
fn the_book_builds() {
    let out = std::env::temp_dir().join(format!("tcpool-book-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let built = match Command::new("mdbook")
        .arg("build")
        .arg(root().join("docs"))
        .arg("-d")
        .arg(&out)
        .output()
    {
        Ok(built) => built,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "mdbook is not installed: run `scripts/test.sh`, the test command, which installs \
             it (or `{MDBOOK_INSTALL}` yourself)"
        ),
        Err(e) => panic!("mdbook could not be started: {e}"),
    };
    let log = String::from_utf8_lossy(&built.stderr).into_owned()
        + &String::from_utf8_lossy(&built.stdout);
    assert!(built.status.success(), "mdbook build failed:\n{log}");
    let complaints: Vec<_> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    assert!(complaints.is_empty(), "mdbook complained:\n{log}");

    // Every chapter is in SUMMARY.md, so each became a page; and each anchor the chapters link
    // to is an id in the page mdBook made (its own slugs, not only this file's `slug`).
    let mut missing = Vec::new();
    let mut chapters = Vec::new();
    for entry in std::fs::read_dir(book_src()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") && !path.ends_with("SUMMARY.md") {
            chapters.push(path);
        }
    }
    assert!(chapters.len() > 10, "{chapters:?}");
    for chapter in &chapters {
        let page = out.join(chapter.with_extension("html").file_name().unwrap());
        if !page.is_file() {
            missing.push(format!("{} (not in SUMMARY.md?)", page.display()));
        }
        let doc = read_doc(&std::fs::read_to_string(chapter).unwrap());
        for link in &doc.links {
            let Some((file, anchor)) = link.target.split_once('#') else {
                continue;
            };
            if file.contains(['/', ':']) {
                continue;
            }
            let target = if file.is_empty() {
                page.clone()
            } else {
                out.join(Path::new(file).with_extension("html"))
            };
            let html = std::fs::read_to_string(&target).unwrap_or_default();
            if !html.contains(&format!("id=\"{anchor}\"")) {
                missing.push(format!(
                    "#{anchor} in {} (linked from {}:{})",
                    target.display(),
                    chapter.file_name().unwrap().to_string_lossy(),
                    link.line
                ));
            }
        }
    }
    assert!(
        out.join("index.html").is_file() && out.join("redis-ping.svg").is_file(),
        "{}",
        out.display()
    );
    let _ = std::fs::remove_dir_all(&out);
    assert!(
        missing.is_empty(),
        "missing from the built book:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_readme_is_a_short_front_door_with_the_two_commands() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= 320,
        "README.md has {lines} lines: keep it a front door and move the reference into the \
         book under docs/src"
    );
    let section = readme
        .split_once("\n## The two commands\n")
        .map(|(_, rest)| rest.split("\n## ").next().unwrap())
        .expect("README.md has a `## The two commands` section");
    for command in ["cargo run --release -- serve ", "scripts/test.sh "] {
        assert!(
            section.lines().any(|l| l.starts_with(command)),
            "the two commands do not include `{}`:\n{section}",
            command.trim_end()
        );
    }
}
