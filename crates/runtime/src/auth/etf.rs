//! A bounded decoder for the part of Erlang's external term format that a
//! `Phoenix.Token` payload uses (`:erlang.term_to_binary/1` of
//! `{data, signed_at_ms, max_age_secs}`).
//!
//! Why not the `eetf` crate: it allocates from the length fields it reads
//! (`Vec::with_capacity(count)` with a `u32` count), so a few bytes can ask for
//! gigabytes, and it decodes terms (funs, pids, compressed terms) a token never
//! holds. Here every length is checked against the bytes that remain before
//! anything is allocated, nesting is capped, and every tag a token does not use
//! is refused: whatever the input, decoding does at most O(input) work and
//! memory and never panics.
//!
//! Tags decoded (numbers from the "External Term Format" chapter of the ERTS
//! user's guide): 70 NEW_FLOAT, 97 SMALL_INTEGER, 98 INTEGER, 100 ATOM (Latin-1),
//! 104 SMALL_TUPLE, 105 LARGE_TUPLE, 106 NIL, 107 STRING, 108 LIST, 109 BINARY,
//! 110 SMALL_BIG, 111 LARGE_BIG (at most 16 bytes of magnitude), 115 SMALL_ATOM
//! (Latin-1), 116 MAP, 118 ATOM_UTF8, 119 SMALL_ATOM_UTF8.

/// The version byte every encoded term starts with.
const VERSION: u8 = 131;

/// Deepest nesting accepted (a token's payload nests three levels at most).
const MAX_DEPTH: usize = 16;

/// A decoded term.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Term {
    /// Any integer whose magnitude fits in 16 bytes.
    Int(i128),
    /// A float.
    Float(f64),
    /// An atom, its name as UTF-8.
    Atom(String),
    /// A binary (an Elixir string when it is UTF-8).
    Binary(Vec<u8>),
    /// A proper list (`STRING_EXT` included, as a list of integers).
    List(Vec<Term>),
    /// A tuple.
    Tuple(Vec<Term>),
    /// A map, its pairs in encoded order.
    Map(Vec<(Term, Term)>),
}

impl Term {
    /// The map value under the atom key `name` (`%{id: 1}`) or the binary key
    /// `name` (`%{"id" => 1}`).
    pub(crate) fn map_get(&self, name: &str) -> Option<&Term> {
        let Term::Map(pairs) = self else { return None };
        pairs.iter().find_map(|(k, v)| match k {
            Term::Atom(a) if a == name => Some(v),
            Term::Binary(b) if b == name.as_bytes() => Some(v),
            _ => None,
        })
    }
}

/// Why a payload could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DecodeError(pub(crate) &'static str);

/// Decodes one term that fills `bytes` exactly (version byte included).
pub(crate) fn decode(bytes: &[u8]) -> Result<Term, DecodeError> {
    let mut r = Reader { bytes, pos: 0 };
    if r.u8()? != VERSION {
        return Err(DecodeError("not external term format (version byte)"));
    }
    let term = r.term(0)?;
    if r.pos != bytes.len() {
        return Err(DecodeError("bytes after the term"));
    }
    Ok(term)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError("truncated"));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<usize, DecodeError> {
        Ok(usize::from(u16::from_be_bytes(self.array()?)))
    }

    fn u32(&mut self) -> Result<usize, DecodeError> {
        usize::try_from(u32::from_be_bytes(self.array()?)).map_err(|_| DecodeError("length"))
    }

    /// A count of items that each take at least `min_bytes`: refused before any
    /// allocation when the remaining input cannot hold them.
    fn count(&self, n: usize, min_bytes: usize) -> Result<usize, DecodeError> {
        match n.checked_mul(min_bytes) {
            Some(needed) if needed <= self.remaining() => Ok(n),
            _ => Err(DecodeError("count larger than the input")),
        }
    }

    fn term(&mut self, depth: usize) -> Result<Term, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError("nested too deep"));
        }
        match self.u8()? {
            97 => Ok(Term::Int(i128::from(self.u8()?))),
            98 => Ok(Term::Int(i128::from(i32::from_be_bytes(self.array()?)))),
            110 => {
                let n = usize::from(self.u8()?);
                self.big(n)
            }
            111 => {
                let n = self.u32()?;
                self.big(n)
            }
            70 => Ok(Term::Float(f64::from_be_bytes(self.array()?))),
            100 | 118 => {
                let n = self.u16()?;
                self.atom(n)
            }
            115 | 119 => {
                let n = usize::from(self.u8()?);
                self.atom(n)
            }
            // Latin-1 atoms (100, 115) are ASCII in practice; non-UTF-8 is refused.
            109 => {
                let n = self.u32()?;
                Ok(Term::Binary(self.take(n)?.to_vec()))
            }
            104 => {
                let n = usize::from(self.u8()?);
                self.elements(n, depth).map(Term::Tuple)
            }
            105 => {
                let n = self.u32()?;
                self.elements(n, depth).map(Term::Tuple)
            }
            106 => Ok(Term::List(Vec::new())),
            107 => {
                let n = self.u16()?;
                let chars = self.take(n)?;
                Ok(Term::List(
                    chars.iter().map(|&c| Term::Int(i128::from(c))).collect(),
                ))
            }
            108 => {
                let n = self.u32()?;
                let items = self.elements(n, depth)?;
                match self.term(depth + 1)? {
                    Term::List(tail) if tail.is_empty() => Ok(Term::List(items)),
                    _ => Err(DecodeError("improper list")),
                }
            }
            116 => {
                let n = self.u32()?;
                let n = self.count(n, 2)?;
                let mut pairs = Vec::with_capacity(n);
                for _ in 0..n {
                    let k = self.term(depth + 1)?;
                    let v = self.term(depth + 1)?;
                    pairs.push((k, v));
                }
                Ok(Term::Map(pairs))
            }
            _ => Err(DecodeError("a term a token never holds")),
        }
    }

    fn elements(&mut self, n: usize, depth: usize) -> Result<Vec<Term>, DecodeError> {
        let n = self.count(n, 1)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.term(depth + 1)?);
        }
        Ok(items)
    }

    fn big(&mut self, n: usize) -> Result<Term, DecodeError> {
        let sign = self.u8()?;
        let digits = self.take(n)?;
        // Little-endian magnitude; a user id never needs more than 128 bits.
        let significant = digits
            .iter()
            .rposition(|&d| d != 0)
            .map_or(0, |last| last + 1);
        if significant > 16 {
            return Err(DecodeError("integer larger than 128 bits"));
        }
        let magnitude = digits[..significant]
            .iter()
            .rev()
            .fold(0u128, |acc, &d| (acc << 8) | u128::from(d));
        let value = match sign {
            0 => i128::try_from(magnitude).map_err(|_| DecodeError("integer too large"))?,
            1 => 0i128
                .checked_sub_unsigned(magnitude)
                .ok_or(DecodeError("integer too large"))?,
            _ => return Err(DecodeError("bad sign byte")),
        };
        Ok(Term::Int(value))
    }

    fn atom(&mut self, n: usize) -> Result<Term, DecodeError> {
        let name = std::str::from_utf8(self.take(n)?).map_err(|_| DecodeError("atom not UTF-8"))?;
        Ok(Term::Atom(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_token_payload() {
        // :erlang.term_to_binary({42, 1700000000000, 86400}) (from a real Phoenix token)
        let bytes = [
            131, 104, 3, 97, 42, 110, 6, 0, 0, 104, 229, 207, 139, 1, 98, 0, 1, 81, 128,
        ];
        assert_eq!(
            decode(&bytes),
            Ok(Term::Tuple(vec![
                Term::Int(42),
                Term::Int(1_700_000_000_000),
                Term::Int(86_400)
            ]))
        );
    }

    #[test]
    fn decodes_maps_atoms_and_binaries() {
        // %{id: 7, name: "Ann"}
        let mut bytes = vec![131, 116, 0, 0, 0, 2, 119, 2, b'i', b'd', 97, 7];
        bytes.extend([
            119, 4, b'n', b'a', b'm', b'e', 109, 0, 0, 0, 3, b'A', b'n', b'n',
        ]);
        let term = decode(&bytes).unwrap();
        assert_eq!(term.map_get("id"), Some(&Term::Int(7)));
        assert_eq!(term.map_get("name"), Some(&Term::Binary(b"Ann".to_vec())));
        assert_eq!(term.map_get("role"), None);
    }

    #[test]
    fn negative_and_big_integers() {
        assert_eq!(decode(&[131, 98, 255, 255, 255, 249]), Ok(Term::Int(-7)));
        assert_eq!(decode(&[131, 110, 1, 1, 5]), Ok(Term::Int(-5)));
        // 2^64: nine bytes of magnitude.
        assert_eq!(
            decode(&[131, 110, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            Ok(Term::Int(1 << 64))
        );
        let mut huge = vec![131, 110, 17, 0];
        huge.extend([0xff; 17]);
        assert!(decode(&huge).is_err());
    }

    #[test]
    fn lengths_are_checked_before_allocating() {
        // A list, a tuple, a map and a binary each claiming 4 billion items in a
        // few bytes: refused, nothing allocated.
        for tag in [108, 105, 116, 109] {
            assert_eq!(
                decode(&[131, tag, 0xff, 0xff, 0xff, 0xff, 97, 1])
                    .map_err(|e| e.0 == "truncated" || e.0 == "count larger than the input"),
                Err(true),
                "tag {tag}"
            );
        }
    }

    #[test]
    fn refuses_what_a_token_never_holds() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[130, 97, 1]).is_err());
        assert!(decode(&[131, 97, 1, 0]).is_err(), "trailing bytes");
        assert!(decode(&[131, 80, 0, 0, 0, 1, 0]).is_err(), "compressed");
        assert!(
            decode(&[131, 108, 0, 0, 0, 1, 97, 1, 97, 2]).is_err(),
            "improper list"
        );
        let mut deep = vec![131];
        deep.extend([104, 1].repeat(40));
        deep.extend([97, 1]);
        assert_eq!(decode(&deep), Err(DecodeError("nested too deep")));
    }
}
