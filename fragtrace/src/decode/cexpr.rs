//! Evaluates the C integer constant expressions that tracefs `print fmt` tables hold, such as
//! `(( gfp_t)((((1UL))) << (10))|((((1UL))) << (11)))` (6.x) or `(( gfp_t)0x400u)` (5.x):
//! literals with suffixes, casts, `| & ^ ~ << >> + - !` and parentheses, in 64-bit arithmetic.
use anyhow::{Result, bail};

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Num(u64),
    Ident(String),
    Op(&'static str),
    Open,
    Close,
}

fn tokenize(s: &str) -> Result<Vec<Tok>> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric()) {
                i += 1;
            }
            out.push(Tok::Num(parse_literal(&s[start..i])?));
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(Tok::Ident(s[start..i].to_string()));
        } else {
            let two = s.get(i..i + 2);
            let op: &'static str = match (c, two) {
                (_, Some("<<")) => "<<",
                (_, Some(">>")) => ">>",
                (b'|', _) => "|",
                (b'&', _) => "&",
                (b'^', _) => "^",
                (b'~', _) => "~",
                (b'!', _) => "!",
                (b'+', _) => "+",
                (b'-', _) => "-",
                (b'*', _) => "*",
                (b'(', _) => {
                    out.push(Tok::Open);
                    i += 1;
                    continue;
                }
                (b')', _) => {
                    out.push(Tok::Close);
                    i += 1;
                    continue;
                }
                _ => bail!("unexpected character {:?}", c as char),
            };
            i += op.len();
            out.push(Tok::Op(op));
        }
    }
    Ok(out)
}

fn parse_literal(lit: &str) -> Result<u64> {
    let digits = lit.trim_end_matches(['u', 'U', 'l', 'L']);
    let v = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        u64::from_str_radix(hex, 16)
    } else if digits.len() > 1 && digits.starts_with('0') {
        u64::from_str_radix(&digits[1..], 8)
    } else {
        digits.parse()
    };
    v.map_err(|_| anyhow::anyhow!("bad integer literal {lit:?}"))
}

/// Words that may appear in a cast: `( gfp_t)`, `(unsigned long)`, `(void *)`.
fn is_type_word(w: &str) -> bool {
    matches!(
        w,
        "gfp_t"
            | "unsigned"
            | "signed"
            | "long"
            | "int"
            | "short"
            | "char"
            | "void"
            | "u32"
            | "u64"
            | "__u32"
            | "__u64"
            | "size_t"
    )
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn eat_op(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Op(o)) if *o == op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn binary(&mut self, level: usize) -> Result<u64> {
        const LEVELS: &[&[&str]] = &[&["|"], &["^"], &["&"], &["<<", ">>"], &["+", "-"]];
        if level == LEVELS.len() {
            return self.unary();
        }
        let mut lhs = self.binary(level + 1)?;
        'outer: loop {
            for op in LEVELS[level] {
                if self.eat_op(op) {
                    let rhs = self.binary(level + 1)?;
                    lhs = match *op {
                        "|" => lhs | rhs,
                        "^" => lhs ^ rhs,
                        "&" => lhs & rhs,
                        "<<" => lhs.checked_shl(rhs as u32).unwrap_or(0),
                        ">>" => lhs.checked_shr(rhs as u32).unwrap_or(0),
                        "+" => lhs.wrapping_add(rhs),
                        _ => lhs.wrapping_sub(rhs),
                    };
                    continue 'outer;
                }
            }
            return Ok(lhs);
        }
    }

    fn unary(&mut self) -> Result<u64> {
        if self.eat_op("~") {
            return Ok(!self.unary()?);
        }
        if self.eat_op("-") {
            return Ok(self.unary()?.wrapping_neg());
        }
        if self.eat_op("!") {
            return Ok((self.unary()? == 0) as u64);
        }
        match self.peek().cloned() {
            Some(Tok::Num(n)) => {
                self.pos += 1;
                Ok(n)
            }
            Some(Tok::Open) if self.is_cast() => {
                // Skip `( type words [*] )` and apply it to what follows (all casts here widen
                // or keep the value).
                while !matches!(self.peek(), Some(Tok::Close)) {
                    self.pos += 1;
                }
                self.pos += 1;
                self.unary()
            }
            Some(Tok::Open) => {
                self.pos += 1;
                let v = self.binary(0)?;
                if self.peek() != Some(&Tok::Close) {
                    bail!("missing ')'");
                }
                self.pos += 1;
                Ok(v)
            }
            Some(Tok::Ident(name)) => bail!("unknown identifier {name}"),
            other => bail!("unexpected {other:?}"),
        }
    }

    fn is_cast(&self) -> bool {
        let mut i = self.pos + 1;
        let mut words = 0;
        while let Some(t) = self.toks.get(i) {
            match t {
                Tok::Ident(w) if is_type_word(w) => words += 1,
                Tok::Op("*") => {}
                Tok::Close => return words > 0,
                _ => return false,
            }
            i += 1;
        }
        false
    }
}

/// Evaluates `expr` as a 64-bit unsigned C constant expression.
pub fn eval(expr: &str) -> Result<u64> {
    let mut p = Parser {
        toks: tokenize(expr)?,
        pos: 0,
    };
    let v = p.binary(0)?;
    if p.pos != p.toks.len() {
        bail!("trailing tokens after the expression");
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::eval;

    #[test]
    fn literals_and_casts() {
        assert_eq!(eval("0x400u").unwrap(), 0x400);
        assert_eq!(eval("(( gfp_t)0x10u) | (( gfp_t)0x40u)").unwrap(), 0x50);
        assert_eq!(
            eval("( unsigned long)((( gfp_t)((((1UL))) << (22))))").unwrap(),
            1 << 22
        );
        assert_eq!(eval("017").unwrap(), 15);
        assert_eq!(eval("0").unwrap(), 0);
    }

    #[test]
    fn precedence_and_unary() {
        assert_eq!(eval("1 | 2 & 3").unwrap(), 3);
        assert_eq!(eval("1 << 2 | 1").unwrap(), 5);
        assert_eq!(eval("(0xff) & ~(( gfp_t)0x0f)").unwrap(), 0xf0);
        assert_eq!(eval("1 + 2 << 1").unwrap(), 6);
    }

    #[test]
    fn rejects_garbage() {
        assert!(eval("FOO | 1").is_err());
        assert!(eval("(1").is_err());
        assert!(eval("1 2").is_err());
        assert!(eval("0xZZ").is_err());
        assert!(eval("$").is_err());
    }
}
