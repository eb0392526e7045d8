//! `.dockerignore` parsing and matching, bug-for-bug with `docker build`.
//!
//! Docker reads the file with `ignorefile.ReadAll` (docker CLI / BuildKit) and
//! matches paths with moby's `patternmatcher` (`New` followed by
//! `MatchesOrParentMatches`). Both are reproduced here on Linux semantics,
//! including their quirks, because users expect the build context that docker
//! would send, not a "nicer" one:
//!
//! * only lines whose very first byte is `#` are comments (`  # x` is a pattern);
//! * patterns are cleaned like Go's `filepath.Clean`, so `./a//b/../c` is `a/c`;
//! * `*`, `?`, `**`, `[...]` and `\` are translated into a Go regular expression
//!   the way moby does it, so regexp syntax that moby forgets to escape keeps
//!   its regexp meaning (`a|b*` is an alternation, `\d` a digit, `^` an anchor);
//! * patterns without wildcards, or of the form `**x` / `x**`, are compared as
//!   plain strings (moby's fast paths), which is why `**.go` also matches
//!   `x/a.go` but `foo/**` does not match `foo` itself;
//! * `!x` never re-includes anything below a directory excluded by an earlier
//!   pattern unless `x` itself matches the path or one of its parents.
//!
//! Go's regexp dialect is translated into the `regex` crate's dialect so that
//! the two agree (ASCII-only `\d`/`\w`/`\s`/`\b`, `[` literal inside classes, and
//! so on). The only known divergences are pathological: `\p{Name}` accepts
//! every name the `regex` crate knows rather than exactly Go's tables,
//! a regexp that exceeds the `regex` crate's size limit (such as `\pL{1000}`) is
//! rejected, and an invalid regexp is rejected at parse time, whereas docker
//! reports it when the pattern is first used.
//!
//! Like moby's method, [`DockerIgnore::is_excluded`] does not special-case the
//! context root: callers should not ask about `.` (a `*` pattern matches it).

use regex::Regex;

/// `bufio.Scanner`'s default token limit: docker fails on a longer line.
const GO_MAX_LINE: usize = 64 * 1024;

/// Go's `filepath.ErrBadPattern` text, so messages read like docker's.
const BAD_PATTERN: &str = "syntax error in pattern";

/// Parsed `.dockerignore` rules of one build context.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    rules: Vec<Rule>,
}

#[derive(Debug, thiserror::Error)]
pub enum DockerIgnoreError {
    #[error(".dockerignore line {line}: invalid pattern `{pattern}`: {reason}")]
    InvalidPattern {
        line: usize,
        pattern: String,
        reason: String,
    },
}

impl DockerIgnore {
    /// Parses the text of a .dockerignore file.
    pub fn parse(text: &str) -> Result<Self, DockerIgnoreError> {
        // Docker fails in three stages (reading the file, `patternmatcher.New`,
        // then the lazy regexp compile); keeping the stages keeps the same
        // error when a file has several problems.
        let entries = read_all(text)?;
        let checked = entries
            .into_iter()
            .filter_map(|entry| entry.check().transpose())
            .collect::<Result<Vec<_>, _>>()?;
        let rules = checked
            .into_iter()
            .map(Checked::compile)
            .collect::<Result<_, _>>()?;
        Ok(Self { rules })
    }

    /// Rules from patterns as `ReadAll` hands them on (what BuildKit sends
    /// a build session as its exclude or include patterns).
    pub fn from_patterns(patterns: &[String]) -> Result<Self, DockerIgnoreError> {
        let rules = patterns
            .iter()
            .enumerate()
            .map(|(index, pattern)| Entry {
                line: index + 1,
                source: pattern.clone(),
                pattern: pattern.clone(),
            })
            .filter_map(|entry| entry.check().transpose())
            .map(|checked| checked.and_then(Checked::compile))
            .collect::<Result<_, _>>()?;
        Ok(Self { rules })
    }

    /// Whether an exception (`!pattern`) may bring back something inside
    /// `dir`: fsutil's test before it skips an excluded folder, which holds
    /// only while every exception is a plain path.
    pub fn has_exceptions_within(&self, dir: &str) -> bool {
        let mut exceptions = self.rules.iter().filter(|r| r.exclusion).peekable();
        if exceptions.peek().is_none() {
            return false;
        }
        let dir_slash = format!("{dir}/");
        let mut all_plain = true;
        let mut within = false;
        for rule in exceptions {
            let path = without_trailing_glob(&rule.glob);
            all_plain &= !path.contains(['*', '[', ']', '?', '^', '\\']);
            within |= format!("{path}/").starts_with(&dir_slash);
        }
        !all_plain || within
    }

    /// Whether `path` (relative to the context root, '/'-separated, no leading "./" or "/") is left out of the context.
    /// A path is also excluded when one of its parent directories matches a pattern (moby's MatchesOrParentMatches),
    /// subject to later `!` exceptions: the last matching pattern wins.
    pub fn is_excluded(&self, path: &str) -> bool {
        let parents = parent_dirs(path);
        let mut matched = false;
        for rule in &self.rules {
            // Only a pattern that can flip the verdict is worth evaluating.
            if rule.exclusion != matched {
                continue;
            }
            let hit = rule.matcher.matches(path) || parents.iter().any(|p| rule.matcher.matches(p));
            if hit {
                matched = !rule.exclusion;
            }
        }
        matched
    }
}

/// A pattern as `ReadAll` hands it to `patternmatcher.New`.
struct Entry {
    line: usize,
    source: String,
    pattern: String,
}

/// A pattern that passed `patternmatcher.New`.
struct Checked {
    entry: Entry,
    exclusion: bool,
    glob: String,
}

#[derive(Debug, Clone)]
struct Rule {
    exclusion: bool,
    /// The cleaned pattern without its `!`, as moby's `Pattern.String()`.
    glob: String,
    matcher: Matcher,
}

/// fsutil's `patternWithoutTrailingGlob`.
fn without_trailing_glob(glob: &str) -> &str {
    let glob = glob.strip_suffix("/**").unwrap_or(glob);
    glob.strip_suffix("/*").unwrap_or(glob)
}

/// moby's match types; the string variants compare bytes exactly as Go does.
#[derive(Debug, Clone)]
enum Matcher {
    Exact(String),
    /// The pattern's bytes minus its trailing `**`.
    Prefix(Vec<u8>),
    /// The pattern's bytes minus its leading `**` (Go slices bytes, and a
    /// skipped byte order mark can make this cut inside a character).
    Suffix(Vec<u8>),
    Regex(Regex),
}

impl Matcher {
    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => path == p,
            Self::Prefix(p) => path.as_bytes().starts_with(p),
            Self::Suffix(s) => {
                let path = path.as_bytes();
                path.ends_with(s) || s.strip_prefix(b"/").is_some_and(|rest| path == rest)
            }
            Self::Regex(re) => re.is_match(path),
        }
    }
}

fn invalid(line: usize, pattern: &str, reason: impl Into<String>) -> DockerIgnoreError {
    DockerIgnoreError::InvalidPattern {
        line,
        pattern: pattern.to_string(),
        reason: reason.into(),
    }
}

/// Docker's `ignorefile.ReadAll`: comments, trimming, `!`, cleaning.
fn read_all(text: &str) -> Result<Vec<Entry>, DockerIgnoreError> {
    let mut entries = Vec::new();
    for (index, raw) in text.split('\n').enumerate() {
        let line = index + 1;
        if raw.len() >= GO_MAX_LINE {
            let head: String = raw.chars().take(40).collect();
            return Err(invalid(
                line,
                &format!("{head}…"),
                "line longer than 64 KiB",
            ));
        }
        let mut content = raw.strip_suffix('\r').unwrap_or(raw);
        if index == 0 {
            content = content.strip_prefix('\u{feff}').unwrap_or(content);
        }
        if let Some(pattern) = normalize_line(content) {
            let source = content.trim().to_string();
            entries.push(Entry {
                line,
                source,
                pattern,
            });
        }
    }
    Ok(entries)
}

fn normalize_line(content: &str) -> Option<String> {
    // The comment test runs before trimming, as in docker.
    if content.starts_with('#') {
        return None;
    }
    let trimmed = content.trim();
    if trimmed.is_empty() {
        return None;
    }
    let (invert, body) = match trimmed.strip_prefix('!') {
        Some(rest) => (true, rest.trim()),
        None => (false, trimmed),
    };
    let body = if body.is_empty() {
        String::new()
    } else {
        strip_root(go_clean(body))
    };
    Some(if invert { format!("!{body}") } else { body })
}

/// Makes `/foo` context-relative while keeping a lone `/` (which then matches nothing).
fn strip_root(pattern: String) -> String {
    match pattern.strip_prefix('/') {
        Some(rest) if !rest.is_empty() => rest.to_string(),
        _ => pattern,
    }
}

impl Entry {
    /// `patternmatcher.New` for one pattern; `None` for a pattern it skips.
    fn check(self) -> Result<Option<Checked>, DockerIgnoreError> {
        let trimmed = self.pattern.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        // New cleans again *with* the `!`, so `!/` collapses to a bare `!`.
        let cleaned = go_clean(trimmed);
        let (exclusion, glob) = match cleaned.strip_prefix('!') {
            Some("") => {
                return Err(invalid(
                    self.line,
                    &self.source,
                    r#"illegal exclusion pattern: "!""#,
                ));
            }
            Some(rest) => (true, rest.to_string()),
            None => (false, cleaned),
        };
        if !glob_is_valid(&glob) {
            return Err(invalid(self.line, &self.source, BAD_PATTERN));
        }
        Ok(Some(Checked {
            entry: self,
            exclusion,
            glob,
        }))
    }
}

impl Checked {
    fn compile(self) -> Result<Rule, DockerIgnoreError> {
        let matcher = compile_glob(&self.glob).map_err(|detail| {
            let reason = format!("{BAD_PATTERN} ({detail})");
            invalid(self.entry.line, &self.entry.source, reason)
        })?;
        Ok(Rule {
            exclusion: self.exclusion,
            glob: self.glob,
            matcher,
        })
    }
}

/// Go's `filepath.Clean` on '/'-separated paths.
fn go_clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|last| *last != "..") => {
                parts.pop();
            }
            // `..` cannot climb above the root, but it stays in a relative path.
            ".." if rooted => {}
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Go's `filepath.Dir`.
fn go_dir(path: &str) -> String {
    let head = path.rfind('/').map_or("", |i| &path[..=i]);
    go_clean(head)
}

/// The parent directories moby tries after the path itself: `a`, `a/b` for `a/b/c`.
fn parent_dirs(path: &str) -> Vec<String> {
    let parent = go_dir(path);
    if parent == "." {
        return Vec::new();
    }
    let parts: Vec<&str> = parent.split('/').collect();
    (1..=parts.len()).map(|n| parts[..n].join("/")).collect()
}

/// Whether Go's `filepath.Match` accepts `pattern` (moby's syntax check).
fn glob_is_valid(pattern: &str) -> bool {
    let chars: Vec<char> = pattern.chars().collect();
    let mut rest = &chars[..];
    while !rest.is_empty() {
        let (chunk, tail) = scan_chunk(rest);
        if !chunk_is_valid(chunk) {
            return false;
        }
        rest = tail;
    }
    true
}

/// Go's `scanChunk`: leading stars, then everything up to an unbracketed `*`.
fn scan_chunk(pattern: &[char]) -> (&[char], &[char]) {
    let start = pattern.iter().take_while(|&&c| c == '*').count();
    let pattern = &pattern[start..];
    let mut in_range = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            '\\' if i + 1 < pattern.len() => i += 1,
            '[' => in_range = true,
            ']' => in_range = false,
            '*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    pattern.split_at(i)
}

/// The error half of Go's `matchChunk`.
fn chunk_is_valid(mut chunk: &[char]) -> bool {
    while let Some((&first, rest)) = chunk.split_first() {
        chunk = match first {
            '[' => match class_tail(rest) {
                Some(tail) => tail,
                None => return false,
            },
            '\\' => match rest.split_first() {
                Some((_, tail)) => tail,
                None => return false,
            },
            _ => rest,
        };
    }
    true
}

/// Validates a glob character class after its `[`; returns what follows its `]`.
fn class_tail(mut chunk: &[char]) -> Option<&[char]> {
    if chunk.first() == Some(&'^') {
        chunk = &chunk[1..];
    }
    let mut ranges = 0;
    loop {
        if ranges > 0 && chunk.first() == Some(&']') {
            return Some(&chunk[1..]);
        }
        chunk = class_escape(chunk)?;
        if chunk.first() == Some(&'-') {
            chunk = class_escape(&chunk[1..])?;
        }
        ranges += 1;
    }
}

/// Go's `getEsc`: one possibly escaped class character, which must not end the chunk.
fn class_escape(chunk: &[char]) -> Option<&[char]> {
    let chunk = match chunk.first()? {
        '-' | ']' => return None,
        '\\' => &chunk[1..],
        _ => chunk,
    };
    let rest = chunk.get(1..)?;
    (!rest.is_empty()).then_some(rest)
}

/// How moby classifies a pattern while building its regexp.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Exact,
    Prefix,
    Suffix,
    Regex,
}

/// moby's `Pattern.compile`.
fn compile_glob(glob: &str) -> Result<Matcher, String> {
    let (kind, go_regex) = glob_to_go_regex(glob);
    let bytes = glob.as_bytes();
    Ok(match kind {
        Kind::Exact => Matcher::Exact(glob.to_string()),
        Kind::Prefix => Matcher::Prefix(bytes[..bytes.len().saturating_sub(2)].to_vec()),
        Kind::Suffix => Matcher::Suffix(bytes.get(2..).unwrap_or_default().to_vec()),
        Kind::Regex => {
            let rust = go_regex::translate(&go_regex)?;
            Matcher::Regex(Regex::new(&rust).map_err(|e| e.to_string())?)
        }
    })
}

/// moby's glob-to-regexp loop, producing Go regexp syntax.
fn glob_to_go_regex(glob: &str) -> (Kind, String) {
    let mut chars = glob.chars().peekable();
    // `text/scanner` silently drops a byte order mark at the very start.
    chars.next_if_eq(&'\u{feff}');
    let mut re = String::from("^");
    let mut kind = Kind::Exact;
    let mut first = true;
    while let Some(ch) = chars.next() {
        match ch {
            '*' if chars.next_if_eq(&'*').is_some() => {
                chars.next_if_eq(&'/');
                kind = double_star(kind, chars.peek().is_none(), &mut re);
                if first {
                    kind = Kind::Suffix;
                }
            }
            '*' => push_regex(&mut re, &mut kind, "[^/]*"),
            '?' => push_regex(&mut re, &mut kind, "[^/]"),
            // moby's escape table loses `|`, `{` and `}` to a bit-shift overflow.
            '.' | '+' | '(' | ')' | '$' => {
                re.push('\\');
                re.push(ch);
            }
            '\\' => match chars.next() {
                Some(next) => {
                    re.push('\\');
                    re.push(next);
                    kind = Kind::Regex;
                }
                None => re.push('\\'),
            },
            '[' | ']' => push_regex(&mut re, &mut kind, &ch.to_string()),
            _ => re.push(ch),
        }
        first = false;
    }
    re.push('$');
    (kind, re)
}

fn push_regex(re: &mut String, kind: &mut Kind, text: &str) {
    re.push_str(text);
    *kind = Kind::Regex;
}

fn double_star(kind: Kind, at_end: bool, re: &mut String) -> Kind {
    match (at_end, kind) {
        (true, Kind::Exact) => Kind::Prefix,
        (true, _) => {
            re.push_str(".*");
            Kind::Regex
        }
        (false, _) => {
            re.push_str("(.*/)?");
            Kind::Regex
        }
    }
}

/// Translation of the Go (RE2, `syntax.Perl`) regexp dialect into the `regex`
/// crate's, for the regexps that [`glob_to_go_regex`] can produce.
mod go_regex {
    use std::fmt::Write as _;

    /// Go's `\d`, `\s`, `\w` are ASCII-only; the `regex` crate's are Unicode.
    fn perl_class(c: char) -> Option<&'static str> {
        Some(match c {
            'd' => "[0-9]",
            'D' => "[^0-9]",
            's' => r"[\t\n\x0C\r ]",
            'S' => r"[^\t\n\x0C\r ]",
            'w' => "[0-9A-Za-z_]",
            'W' => "[^0-9A-Za-z_]",
            _ => return None,
        })
    }

    /// Escapes that stand for a fixed piece of `regex` syntax.
    fn fixed_escape(c: char) -> Option<&'static str> {
        match c {
            'A' => Some(r"\A"),
            'z' => Some(r"\z"),
            // Go's word boundaries are ASCII-only.
            'b' => Some(r"(?-u:\b)"),
            'B' => Some(r"(?-u:\B)"),
            _ => perl_class(c),
        }
    }

    const POSIX_CLASSES: [&str; 14] = [
        "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct",
        "space", "upper", "word", "xdigit",
    ];

    /// A class that matches no character, e.g. for a lone surrogate escape.
    const NOTHING: &str = r"[^\x{0}-\x{10FFFF}]";
    const ANYTHING: &str = r"[\x{0}-\x{10FFFF}]";

    pub(super) fn translate(go: &str) -> Result<String, String> {
        let mut t = Translator {
            chars: go.chars().collect(),
            pos: 0,
            out: String::new(),
            prev: Prev::Nothing,
        };
        while let Some(c) = t.bump() {
            t.top_level(c)?;
        }
        Ok(t.out)
    }

    /// What the last top-level token was, for Go's repetition rules.
    #[derive(Clone, Copy, PartialEq)]
    enum Prev {
        /// Start of a group or alternative: there is nothing to repeat.
        Nothing,
        Item,
        Repeat,
    }

    struct Translator {
        chars: Vec<char>,
        pos: usize,
        out: String,
        prev: Prev,
    }

    impl Translator {
        fn peek_at(&self, offset: usize) -> Option<char> {
            self.chars.get(self.pos + offset).copied()
        }

        fn bump(&mut self) -> Option<char> {
            let c = self.peek_at(0)?;
            self.pos += 1;
            Some(c)
        }

        fn item(&mut self, text: &str) {
            self.out.push_str(text);
            self.prev = Prev::Item;
        }

        fn top_level(&mut self, c: char) -> Result<(), String> {
            match c {
                '\\' => return self.top_escape(),
                '[' => {
                    let class = self.class()?;
                    self.item(&class);
                }
                '*' | '?' | '+' => return self.repeat(&c.to_string()),
                '{' => return self.brace(),
                // The glob translation leaves these unescaped only where they
                // mean the same in both dialects.
                '(' | '|' => {
                    self.out.push(c);
                    self.prev = Prev::Nothing;
                }
                '^' | '$' | '.' | ')' => self.item(&c.to_string()),
                _ => {
                    let mut literal = String::new();
                    push_literal(&mut literal, u32::from(c));
                    self.item(&literal);
                }
            }
            Ok(())
        }

        /// Go rejects stacked repetitions (`a**`, `a{2}*`) that the `regex` crate accepts.
        fn repeat(&mut self, op: &str) -> Result<(), String> {
            match self.prev {
                Prev::Nothing => {
                    return Err(format!("missing argument to repetition operator: `{op}`"));
                }
                Prev::Repeat => return Err(format!("invalid nested repetition operator: `{op}`")),
                Prev::Item => {}
            }
            self.out.push_str(op);
            if self.peek_at(0) == Some('?') {
                self.pos += 1;
                self.out.push('?');
            }
            self.prev = Prev::Repeat;
            Ok(())
        }

        /// `{n}`, `{n,}` or `{n,m}` repeats; any other `{` is a literal.
        fn brace(&mut self) -> Result<(), String> {
            let start = self.pos;
            let Some((min, max)) = self.repeat_bounds() else {
                self.pos = start;
                self.item(r"\{");
                return Ok(());
            };
            let too_big = min > 1000 || max.is_some_and(|m| m > 1000 || m < min);
            if too_big {
                return Err("invalid repeat count".to_string());
            }
            match max {
                Some(m) if m == min => self.repeat(&format!("{{{min}}}")),
                Some(m) => self.repeat(&format!("{{{min},{m}}}")),
                None => self.repeat(&format!("{{{min},}}")),
            }
        }

        /// Go's `parseRepeat` after the `{`: `(min, None)` means no upper bound.
        fn repeat_bounds(&mut self) -> Option<(u64, Option<u64>)> {
            let min = self.decimal()?;
            let max = match self.bump()? {
                '}' => return Some((min, Some(min))),
                ',' if self.peek_at(0) == Some('}') => None,
                ',' => Some(self.decimal()?),
                _ => return None,
            };
            (self.bump()? == '}').then_some((min, max))
        }

        /// Go's `parseInt`: digits without a leading zero; huge values saturate.
        fn decimal(&mut self) -> Option<u64> {
            let digits: String = self.chars[self.pos..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
                return None;
            }
            self.pos += digits.len();
            Some(digits.parse().unwrap_or(u64::MAX))
        }

        fn top_escape(&mut self) -> Result<(), String> {
            let next = self
                .peek_at(0)
                .ok_or("trailing backslash at end of expression")?;
            let piece = match next {
                'Q' => {
                    self.quoted();
                    return Ok(());
                }
                'C' => return Err(r"invalid escape sequence: `\C`".to_string()),
                'p' | 'P' => self.unicode_class()?,
                _ => match fixed_escape(next) {
                    Some(text) => {
                        self.pos += 1;
                        text.to_string()
                    }
                    None => {
                        let mut literal = String::new();
                        push_literal(&mut literal, self.escape()?);
                        literal
                    }
                },
            };
            self.item(&piece);
            Ok(())
        }

        /// `\Q...\E`, positioned on the `Q`: everything up to `\E` (or the end) is literal.
        fn quoted(&mut self) {
            self.pos += 1;
            while let Some(c) = self.bump() {
                if c == '\\' && self.peek_at(0) == Some('E') {
                    self.pos += 1;
                    break;
                }
                let mut literal = String::new();
                push_literal(&mut literal, u32::from(c));
                self.item(&literal);
            }
            // Even an empty quote separates two repetition operators in Go.
            if self.prev == Prev::Repeat {
                self.prev = Prev::Item;
            }
        }

        /// Go's `parseUnicodeClass`, positioned on the `p` or `P`.
        fn unicode_class(&mut self) -> Result<String, String> {
            let mut negated = self.bump() == Some('P');
            let name: String = match self.bump() {
                Some('{') => {
                    let len = self.chars[self.pos..]
                        .iter()
                        .position(|&c| c == '}')
                        .ok_or("invalid character class range")?;
                    let name = self.chars[self.pos..self.pos + len].iter().collect();
                    self.pos += len + 1;
                    name
                }
                Some(c) => c.to_string(),
                None => String::new(),
            };
            let name = match name.strip_prefix('^') {
                Some(rest) => {
                    negated = !negated;
                    rest
                }
                None => &name,
            };
            if !looks_like_go_unicode_name(name) {
                return Err(format!("invalid character class range: `{name}`"));
            }
            Ok(format!(r"\{}{{{name}}}", if negated { 'P' } else { 'p' }))
        }

        /// Go's `parseEscape`, positioned after the backslash; returns a code point.
        fn escape(&mut self) -> Result<u32, String> {
            let c = self
                .bump()
                .ok_or("trailing backslash at end of expression")?;
            let invalid = || format!("invalid escape sequence: `\\{c}`");
            let next_is_octal = self.peek_at(0).is_some_and(|d| d.is_digit(8));
            match c {
                '1'..='7' if !next_is_octal => Err(invalid()),
                '0'..='7' => Ok(self.octal(c)),
                'x' => self.hex().ok_or_else(invalid),
                'a' => Ok(0x07),
                'f' => Ok(0x0C),
                'n' => Ok(0x0A),
                'r' => Ok(0x0D),
                't' => Ok(0x09),
                'v' => Ok(0x0B),
                c if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok(u32::from(c)),
                _ => Err(invalid()),
            }
        }

        fn octal(&mut self, first: char) -> u32 {
            let mut value = first.to_digit(8).unwrap_or(0);
            for _ in 0..2 {
                match self.peek_at(0).and_then(|d| d.to_digit(8)) {
                    Some(digit) => {
                        value = value * 8 + digit;
                        self.pos += 1;
                    }
                    None => break,
                }
            }
            value
        }

        fn hex(&mut self) -> Option<u32> {
            let first = self.bump()?;
            if first == '{' {
                return self.braced_hex();
            }
            let second = self.bump().and_then(|c| c.to_digit(16));
            Some(first.to_digit(16)? * 16 + second?)
        }

        fn braced_hex(&mut self) -> Option<u32> {
            let mut value: u32 = 0;
            let mut digits = 0;
            loop {
                let c = self.bump()?;
                if c == '}' {
                    break;
                }
                value = value * 16 + c.to_digit(16)?;
                if value > 0x10FFFF {
                    return None;
                }
                digits += 1;
            }
            (digits > 0).then_some(value)
        }

        /// Go's `parseClass`, positioned after the `[`.
        fn class(&mut self) -> Result<String, String> {
            let negated = self.peek_at(0) == Some('^');
            if negated {
                self.pos += 1;
            }
            let mut items = String::new();
            // Go lets `]` stand for itself as the first member.
            let mut first = true;
            while first || self.peek_at(0) != Some(']') {
                first = false;
                self.class_item(&mut items)?;
            }
            self.pos += 1;
            Ok(finish_class(negated, &items))
        }

        fn class_item(&mut self, items: &mut String) -> Result<(), String> {
            if let Some(posix) = self.posix_class()? {
                items.push_str(&posix);
                return Ok(());
            }
            if self.peek_at(0) == Some('\\') {
                if let Some('p' | 'P') = self.peek_at(1) {
                    self.pos += 1;
                    let class = self.unicode_class()?;
                    items.push_str(&class);
                    return Ok(());
                }
                if let Some(class) = self.peek_at(1).and_then(perl_class) {
                    self.pos += 2;
                    items.push_str(class);
                    return Ok(());
                }
            }
            self.class_range(items)
        }

        fn class_range(&mut self, items: &mut String) -> Result<(), String> {
            let lo = self.class_char()?;
            let mut hi = lo;
            let is_range =
                self.peek_at(0) == Some('-') && self.peek_at(1).is_some_and(|c| c != ']');
            if is_range {
                self.pos += 1;
                hi = self.class_char()?;
                if hi < lo {
                    return Err("invalid character class range".to_string());
                }
            }
            push_range(items, lo, hi);
            Ok(())
        }

        fn class_char(&mut self) -> Result<u32, String> {
            match self.bump() {
                None => Err("missing closing ]".to_string()),
                Some('\\') => self.escape(),
                Some(c) => Ok(u32::from(c)),
            }
        }

        /// `[:alpha:]` and friends; a `[` without a later `:]` is just a `[`.
        fn posix_class(&mut self) -> Result<Option<String>, String> {
            if self.peek_at(0) != Some('[')
                || self.peek_at(1) != Some(':')
                || self.peek_at(2).is_none()
            {
                return Ok(None);
            }
            let body = &self.chars[self.pos + 2..];
            let Some(end) = body.windows(2).position(|w| w == [':', ']']) else {
                return Ok(None);
            };
            let name: String = body[..end].iter().collect();
            if !POSIX_CLASSES.contains(&name.strip_prefix('^').unwrap_or(&name)) {
                return Err(format!("invalid character class range: `[:{name}:]`"));
            }
            self.pos += 2 + end + 2;
            Ok(Some(format!("[:{name}:]")))
        }
    }

    /// Go knows `Any`, the general categories and the scripts, all capitalised;
    /// the `regex` crate checks the name itself.
    fn looks_like_go_unicode_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars.next().is_some_and(|c| c.is_ascii_uppercase())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    fn push_literal(out: &mut String, code: u32) {
        match char::from_u32(code) {
            Some(c) => out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
            None => out.push_str(NOTHING),
        }
    }

    /// Adds `lo-hi` to a class body; surrogates cannot occur in a `&str`, so they are cut out.
    fn push_range(items: &mut String, lo: u32, hi: u32) {
        for (a, b) in [(lo, hi.min(0xD7FF)), (lo.max(0xE000), hi)] {
            if a == b {
                let _ = write!(items, r"\x{{{a:X}}}");
            } else if a < b {
                let _ = write!(items, r"\x{{{a:X}}}-\x{{{b:X}}}");
            }
        }
    }

    fn finish_class(negated: bool, items: &str) -> String {
        match (items.is_empty(), negated) {
            (true, false) => NOTHING.to_string(),
            (true, true) => ANYTHING.to_string(),
            (false, false) => format!("[{items}]"),
            (false, true) => format!("[^{items}]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(text: &str) -> DockerIgnore {
        DockerIgnore::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    /// Asserts which of `paths` the rules in `text` exclude.
    fn check(text: &str, excluded: &[&str], kept: &[&str]) {
        let rules = ignore(text);
        for path in excluded {
            assert!(rules.is_excluded(path), "{text:?} should exclude {path:?}");
        }
        for path in kept {
            assert!(!rules.is_excluded(path), "{text:?} should keep {path:?}");
        }
    }

    fn error_line(text: &str) -> usize {
        match DockerIgnore::parse(text) {
            Err(DockerIgnoreError::InvalidPattern { line, .. }) => line,
            Ok(_) => panic!("{text:?} should be rejected"),
        }
    }

    #[test]
    fn empty_file_excludes_nothing() {
        check("", &[], &["a", "Dockerfile", "a/b/c"]);
        check("\n\n   \n\t\n", &[], &["a"]);
    }

    #[test]
    fn comments_are_skipped() {
        check(
            "# node_modules\nbuild\n#dist",
            &["build"],
            &["node_modules", "dist", "# node_modules"],
        );
    }

    #[test]
    fn comment_only_at_first_byte() {
        // Docker tests for `#` before trimming, so an indented `#` starts a pattern.
        check("  #keep", &["#keep"], &["keep"]);
    }

    #[test]
    fn whitespace_and_crlf_are_trimmed() {
        check(
            "  build  \r\n\tdist\t\r\n",
            &["build", "dist/x"],
            &["builds"],
        );
    }

    #[test]
    fn bom_is_ignored_on_first_line() {
        check("\u{feff}secret.txt\n", &["secret.txt"], &[]);
        check("\u{feff}#comment\nx", &["x"], &["#comment"]);
    }

    #[test]
    fn markdown_with_readme_exception() {
        check(
            "*.md\n!README.md",
            &["CHANGES.md", "a.md"],
            &["README.md", "docs/a.md", "main.go"],
        );
    }

    #[test]
    fn exception_before_pattern_is_overridden() {
        check("!README.md\n*.md", &["README.md"], &[]);
    }

    #[test]
    fn last_match_wins_both_ways() {
        check("*.txt\n!keep.txt\nkeep.txt", &["keep.txt", "a.txt"], &[]);
        check("keep.txt\n*.txt\n!keep.txt", &["a.txt"], &["keep.txt"]);
    }

    #[test]
    fn double_star_any_depth() {
        check(
            "**/*.go",
            &["main.go", "a/b/c.go", "a/b.go"],
            &["main.rs", "a/go"],
        );
    }

    #[test]
    fn double_star_leading_suffix_fast_path() {
        check(
            "**/foo",
            &["foo", "a/foo", "a/b/foo", "foo/bar"],
            &["afoo", "food"],
        );
        // Without a slash moby only compares suffixes, so the name need not start there.
        check("**foo", &["foo", "afoo", "a/b/xfoo"], &["fool"]);
        check("**", &["a", "a/b", ".hidden"], &[]);
    }

    #[test]
    fn double_star_trailing_matches_below_only() {
        check("foo/**", &["foo/a", "foo/a/b"], &["foo", "foobar"]);
        // `**` glued to a name is a plain prefix test.
        check("foo**", &["foo", "foobar", "foo/x"], &["fo"]);
    }

    #[test]
    fn double_star_in_the_middle() {
        check(
            "a/**/b",
            &["a/b", "a/x/b", "a/x/y/b", "a/b/c"],
            &["b", "a/xb", "x/a/b"],
        );
        check(
            "**/dir2/*",
            &["dir/dir2/file", "dir2/f", "dir/dir2/file/x"],
            &["dir/dir2"],
        );
        check("**/foo/**", &["foo/x", "a/foo/x/y"], &["foo", "a/foo"]);
    }

    #[test]
    fn directory_pattern_excludes_its_contents() {
        check(
            "docs",
            &["docs", "docs/a/b.txt", "docs/x"],
            &["docs.txt", "mydocs/x", "a/docs"],
        );
    }

    #[test]
    fn exception_inside_excluded_directory() {
        check(
            "docs\n!docs/keep.txt",
            &["docs", "docs/a.txt"],
            &["docs/keep.txt"],
        );
        check(
            "docs/*\n!docs/README.md",
            &["docs/x"],
            &["docs/README.md", "docs"],
        );
    }

    #[test]
    fn exception_of_a_parent_reincludes_children() {
        check(
            "**\n!util/docker/web",
            &["util/docker", "a"],
            &["util/docker/web", "util/docker/web/foo"],
        );
        check(
            "**\n!util/docker/web\nutil/docker/web/foo",
            &["util/docker/web/foo"],
            &["util/docker/web/bar"],
        );
    }

    #[test]
    fn exception_cannot_reach_into_a_directory_it_does_not_name() {
        // `!docs/*.md` matches neither `docs/sub` nor `docs`, so `docs/sub/a.md` stays out.
        check("docs\n!docs/*.md", &["docs/sub/a.md"], &["docs/a.md"]);
    }

    #[test]
    fn leading_slash_is_relative_to_context() {
        check("/build", &["build", "build/x"], &["src/build"]);
        check("*\n!/keep", &["x"], &["keep"]);
    }

    #[test]
    fn dot_segments_are_cleaned() {
        check("./dot", &["dot", "dot/x"], &[]);
        check("a//b/./c/../d", &["a/b/d"], &["a/b/c"]);
        check("/../x", &["x"], &[]);
    }

    #[test]
    fn dot_and_root_patterns_match_nothing() {
        check(".\n/\n./\n..\n../x", &[], &["a", "a/b", "x", "Dockerfile"]);
    }

    #[test]
    fn trailing_slash_is_dropped() {
        check("dir/", &["dir", "dir/file"], &["dirx"]);
        check("docs/\n!docs/README.md", &["docs/a"], &["docs/README.md"]);
    }

    #[test]
    fn single_star_stays_in_one_segment() {
        check("*", &["a", "a/b"], &[]);
        check("a/*.txt", &["a/x.txt"], &["a/b/x.txt", "x.txt"]);
        check("*/temp*", &["a/temp", "a/tempx/y"], &["temp", "a/b/temp"]);
        check("a*/b", &["abc/b", "a/b"], &["a/c/b"]);
    }

    #[test]
    fn question_mark_is_one_character() {
        check(
            "abc?def",
            &["abcZdef", "abc☺def"],
            &["abcdef", "abc/def", "abcZZdef"],
        );
        check("temp?", &["temp1"], &["temp", "temp12"]);
    }

    #[test]
    fn character_classes() {
        check("a[b-d]e", &["ace", "abe"], &["ae", "aae", "aze"]);
        check("a[^b-d]e", &["aze"], &["ace"]);
        check("[a-ζ]*", &["α", "abc"], &["A"]);
        check("[\\]a]", &["]", "a"], &["b"]);
        check("[x\\-]", &["x", "-"], &["z"]);
    }

    #[test]
    fn bang_is_not_class_negation() {
        // Unlike shells, docker treats `!` inside a class as a plain member.
        check("a[!b]c", &["a!c", "abc"], &["axc"]);
    }

    #[test]
    fn backslash_escapes() {
        check("a\\*b", &["a*b"], &["ab", "axb"]);
        check("a\\\\", &["a\\"], &["a"]);
        check("\\[x\\]", &["[x]"], &["x"]);
        check("q\\?", &["q?"], &["qa"]);
    }

    #[test]
    fn regex_metacharacters_are_literal_where_moby_escapes_them() {
        check("a(b)c/def", &["a(b)c/def"], &["abc/def"]);
        check("abc.def", &["abc.def"], &["abcZdef"]);
        check(".*", &[".foo", ".git/x"], &["foo"]);
        check(
            "dist/*.whl",
            &["dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"],
            &[],
        );
        check("a.|)$(}+{bc", &["a.|)$(}+{bc"], &["a"]);
    }

    #[test]
    fn pipe_and_braces_keep_regex_meaning_next_to_wildcards() {
        // moby's escape table drops `|`, `{` and `}`; docker's regexp then alternates.
        check("a|b*", &["a", "ab", "xb", "a|bc"], &["xyz", "c/d"]);
        check("x{2}[y]", &["xxy"], &["x{2}y", "xy"]);
        check("x{,2}[y]", &["x{,2}y"], &["xxy"]);
        check("x{2}*", &["xx", "xxy"], &["x", "x{2}"]);
        // Go refuses stacked repetitions and repeating nothing, so docker rejects these.
        assert_eq!(error_line("x{2}{3}*"), 1);
        assert_eq!(error_line("[a]|{2}"), 1);
    }

    #[test]
    fn go_regexp_escapes_survive_translation() {
        // `\d` is ASCII-only in Go.
        check("v\\d*", &["v1", "v2.0"], &["vx", "v٣"]);
        check("\\<a*", &["<ab"], &["ab"]);
        check("[^\\d]x*", &["ax", "٣x"], &["1x"]);
        check("a\\b*", &["a", "a-x", "aé"], &["ab"]);
        check("\\x41*", &["A", "AB"], &["x41"]);
        check("\\101*", &["A", "AA"], &["101"]);
        check("\\p{Greek}*", &["α", "αβ"], &["a"]);
        check("\\p{^Greek}*", &["a"], &["α"]);
        check("\\pL\\PL*", &["a1"], &["ab"]);
        check("[[:alpha:]]*", &["ab"], &["1", "é"]);
        check("[[:^digit:]]*", &["a"], &["1"]);
        // `\Q` quotes the rest of moby's regexp, its `[^/]*$` included.
        check("\\Qa*", &["a[^/]*$"], &["a", "ab"]);
        check("x\\Q\\E*", &["x", "xx"], &[]);
        // Surrogates cannot occur in paths, so only the rest of the range counts.
        check("[\\x{D800}-\\x{E000}]*", &["\u{e000}"], &["\u{d7fe}", "x"]);
        assert_eq!(error_line("[a-[:alpha:]]"), 1);
    }

    #[test]
    fn classes_containing_wildcards_follow_the_generated_regexp() {
        // moby puts `[^/]*` inside the class, giving the class {[, ^, /} then `*` then `]`.
        check("[*]", &["]", "[]", "^^]"], &["*", "x]"]);
    }

    #[test]
    fn parent_directory_match_excludes_descendants() {
        check("a/b", &["a/b/c", "a/b/c/d"], &["a", "a/bc", "a/c"]);
        check("*/b", &["x/b/c"], &["b/c"]);
    }

    #[test]
    fn exclusion_prefix_is_trimmed_again() {
        check("*\n!  keep", &["x"], &["keep"]);
        check("*\n! ./keep/ ", &["x"], &["keep", "keep/a"]);
    }

    #[test]
    fn double_bang_is_a_literal_bang() {
        check("*\n!!x", &["x"], &["!x"]);
    }

    #[test]
    fn bare_bang_is_an_error() {
        assert_eq!(error_line("a\n!"), 2);
        assert_eq!(error_line("! "), 1);
        assert_eq!(error_line("!/"), 1);
    }

    #[test]
    fn invalid_patterns_name_their_line() {
        assert_eq!(error_line("ok\n# c\n\n["), 4);
        assert_eq!(error_line("a[\nb"), 1);
        assert_eq!(error_line("x\\"), 1);
        assert_eq!(error_line("[]a]"), 1);
        assert_eq!(error_line("[-x]"), 1);
        assert_eq!(error_line("[x-]"), 1);
        assert_eq!(error_line("[a-b-c]"), 1);
        assert_eq!(error_line("*[^bc"), 1);
    }

    #[test]
    fn syntax_errors_later_in_a_pattern_are_found() {
        assert_eq!(error_line("abc*x\n*x["), 2);
    }

    #[test]
    fn regexp_errors_are_reported() {
        // Valid glob, but `[a-[^/]` is a reversed range once moby builds its regexp.
        assert_eq!(error_line("x\n[a-*]"), 2);
        assert_eq!(error_line("a\\q*"), 1);
    }

    #[test]
    fn glob_errors_take_precedence_over_regexp_errors() {
        assert_eq!(error_line("[a-*]\n["), 2);
    }

    #[test]
    fn error_message_names_line_and_pattern() {
        let err = DockerIgnore::parse("ok\n  [abc  ")
            .err()
            .map(|e| e.to_string());
        let expected = ".dockerignore line 2: invalid pattern `[abc`: syntax error in pattern";
        assert_eq!(err.as_deref(), Some(expected));
    }

    #[test]
    fn very_long_line_is_rejected() {
        let long = "a".repeat(GO_MAX_LINE);
        assert_eq!(error_line(&format!("x\n{long}\n")), 2);
        let fits = "a".repeat(GO_MAX_LINE - 1);
        assert!(DockerIgnore::parse(&fits).is_ok());
        assert!(DockerIgnore::parse(&format!("{fits}\nb")).is_ok());
        // The limit counts the raw line, carriage return and byte order mark included.
        assert_eq!(error_line(&format!("{fits}\r\nb")), 1);
        let bom_line = format!("\u{feff}{}", "a".repeat(GO_MAX_LINE - 3));
        assert_eq!(error_line(&bom_line), 1);
    }

    #[test]
    fn go_clean_matches_go() {
        let cases = [
            ("", "."),
            (".", "."),
            ("./", "."),
            ("a/", "a"),
            ("a//b", "a/b"),
            ("a/./b", "a/b"),
            ("a/../b", "b"),
            ("a/..", "."),
            ("../a", "../a"),
            ("../../a/../b", "../../b"),
            ("/", "/"),
            ("/..", "/"),
            ("/../a", "/a"),
            ("//a//", "/a"),
            ("a/b/../../..", ".."),
        ];
        for (input, want) in cases {
            assert_eq!(go_clean(input), want, "Clean({input:?})");
        }
    }

    #[test]
    fn parent_dirs_follow_filepath_dir() {
        assert_eq!(parent_dirs("a/b/c"), ["a", "a/b"]);
        assert!(parent_dirs("a").is_empty());
    }

    #[test]
    fn regexps_are_translated_like_moby_builds_them() {
        let cases = [
            ("*", Kind::Regex, "^[^/]*$"),
            ("a*/b", Kind::Regex, "^a[^/]*/b$"),
            ("**/**", Kind::Regex, "^(.*/)?.*$"),
            ("**/dir2/**", Kind::Regex, "^(.*/)?dir2/.*$"),
            ("**/**/*.txt", Kind::Regex, r"^(.*/)?(.*/)?[^/]*\.txt$"),
            ("dir/**", Kind::Prefix, "^dir/$"),
            ("**/dir", Kind::Suffix, "^(.*/)?dir$"),
            ("abc", Kind::Exact, "^abc$"),
        ];
        for (glob, kind, regex) in cases {
            let (got_kind, got) = glob_to_go_regex(glob);
            assert!(got_kind == kind, "kind of {glob:?}");
            assert_eq!(got, regex, "regexp of {glob:?}");
        }
    }
}
