//! Files attached to posts: the SHA-256 that names a file's bytes, and the
//! checks on what a post says about a file (its name and media type).

use std::fmt;

/// Largest chunk of a file in one Upload or Download message, in bytes
/// (1 MiB): small enough for every gRPC client's default 4 MiB message
/// limit, large enough that per-message costs stay small.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Most files one post may reference on the wire, whatever a node allows
/// its own members (`limits.max_files_per_post`, at most this).
pub const MAX_FILES_PER_POST: usize = 100;

/// Longest file name a post may give, in bytes (a common file-system limit).
pub const MAX_FILE_NAME_BYTES: usize = 255;

/// Longest media type, in bytes (RFC 6838 allows 127 for type and subtype each).
const MAX_MEDIA_TYPE_BYTES: usize = 255;

/// The SHA-256 of a file's bytes: what names it in a post, on disk and on
/// the wire. Shown as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileHash(pub [u8; 32]);

impl FileHash {
    /// From 64 hex digits (either case).
    pub fn parse_hex(s: &str) -> Result<Self, String> {
        let bytes = hex::decode(s.trim())
            .map_err(|_| format!("{s:?} is not a SHA-256 in hex (64 digits 0-9 a-f)"))?;
        Self::from_bytes(&bytes)
            .ok_or_else(|| format!("{s:?} is not a SHA-256 in hex (64 digits 0-9 a-f)"))
    }

    /// From 32 raw bytes; `None` for any other length.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }

    /// The SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, data);
        Self::from_bytes(digest.as_ref()).unwrap_or(Self([0; 32]))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for FileHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for FileHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileHash({})", self.to_hex())
    }
}

/// Characters that change how text around them is shown (bidirectional
/// overrides and isolates, zero-width marks): a name with one could show
/// as `photo.jpg` and be `photo\u{202e}gpj.exe`.
fn is_deceptive(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// Checks a file name a post gives: 1 to [`MAX_FILE_NAME_BYTES`] bytes, no
/// directory (`/`, `\`), not starting with `.` (no hidden files, no `..`),
/// no control or display-changing characters. Readers save files under
/// this name, so it must never reach outside their chosen directory, hide
/// there, or show as something it is not.
pub fn check_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_FILE_NAME_BYTES {
        return Err(format!(
            "a file name is 1 to {MAX_FILE_NAME_BYTES} bytes, not {}",
            name.len()
        ));
    }
    if name.starts_with('.') {
        return Err(format!(
            "{name:?} starts with '.'; give the file a visible name"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == '\\' || c.is_control() || is_deceptive(*c))
    {
        return Err(format!(
            "a file name holds no directories or control characters, and {name:?} holds {c:?}"
        ));
    }
    Ok(())
}

/// Checks a media type: `type/subtype` (RFC 6838's restricted names,
/// parameters allowed after `;`), at most [`MAX_MEDIA_TYPE_BYTES`] bytes.
pub fn check_media_type(media_type: &str) -> Result<(), String> {
    let bad = || format!("{media_type:?} is not a media type such as image/jpeg");
    if media_type.len() > MAX_MEDIA_TYPE_BYTES {
        return Err(bad());
    }
    let essence = media_type.split(';').next().unwrap_or_default().trim();
    let Some((kind, sub)) = essence.split_once('/') else {
        return Err(bad());
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    if !token(kind) || !token(sub) || media_type.chars().any(|c| c.is_control()) {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_parse_from_hex_and_show_as_hex() {
        let h = FileHash::of(b"bridge.jpg bytes");
        assert_eq!(FileHash::parse_hex(&h.to_hex()).unwrap(), h);
        assert_eq!(FileHash::parse_hex(&h.to_hex().to_uppercase()).unwrap(), h);
        assert!(FileHash::parse_hex("abc").is_err());
        assert!(FileHash::parse_hex(&"zz".repeat(32)).is_err());
        assert_eq!(
            FileHash::of(b"").to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn names_never_reach_outside_a_directory() {
        for good in ["bridge.jpg", "Evakueringsplan v2.pdf", "a", "läge.png"] {
            assert!(check_file_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "..hidden",
            ".bashrc",
            "../etc/passwd",
            "a/b",
            "a\\b",
            "a\nb",
            "photo\u{202e}gpj.exe",
            "zero\u{200b}width",
        ] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_file_name(&"x".repeat(256)).is_err());
    }

    #[test]
    fn media_types_are_type_slash_subtype() {
        for good in [
            "image/jpeg",
            "video/mp4",
            "application/vnd.ms-excel",
            "text/plain; charset=utf-8",
        ] {
            assert!(check_media_type(good).is_ok(), "{good}");
        }
        for bad in ["", "image", "/jpeg", "image/", "im age/jpeg", "text/html\n"] {
            assert!(check_media_type(bad).is_err(), "{bad:?}");
        }
    }
}
