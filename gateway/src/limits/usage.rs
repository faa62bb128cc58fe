//! Token usage read from a relayed answer as it passes, for tokens-per-minute limits: JSON and
//! SSE alike, without parsing the body or holding it.

/// Reads token usage from a response body as it passes, JSON or SSE, without parsing it:
/// the largest `"total_tokens"` seen, else the largest `"input_tokens"` plus the largest
/// `"output_tokens"` (Anthropic's Messages API, whose stream repeats running totals). Keys
/// inside JSON strings are escaped (`\"`) and never match. Matches split between two frames
/// are found through a small carry-over of the previous frame's end.
#[derive(Debug, Clone)]
pub struct Usage {
    total: u64,
    input: u64,
    output: u64,
    carry: [u8; CARRY],
    carried: usize,
}

const CARRY: usize = 48;

/// The searcher for the one needle, built once: building a `memmem` finder per frame costs more
/// than searching a short SSE frame.
static TOKENS_KEY: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"_tokens\""));

impl Default for Usage {
    fn default() -> Self {
        Self { total: 0, input: 0, output: 0, carry: [0; CARRY], carried: 0 }
    }
}

impl Usage {
    /// Reads one frame.
    pub fn scan(&mut self, data: &[u8]) {
        // The seam: the previous frame's end and this frame's start.
        let mut seam = [0u8; CARRY * 2];
        let head = data.len().min(CARRY);
        seam[..self.carried].copy_from_slice(&self.carry[..self.carried]);
        seam[self.carried..self.carried + head].copy_from_slice(&data[..head]);
        let seam_len = self.carried + head;
        self.scan_slice(&seam[..seam_len]);
        self.scan_slice(data);
        // Keep the last bytes seen (seam included, for frames shorter than the carry).
        let tail_source: &[u8] = if data.len() >= CARRY { data } else { &seam[..seam_len] };
        let keep = tail_source.len().min(CARRY);
        self.carry[..keep].copy_from_slice(&tail_source[tail_source.len() - keep..]);
        self.carried = keep;
    }

    fn scan_slice(&mut self, data: &[u8]) {
        for at in TOKENS_KEY.find_iter(data) {
            let before = &data[..at];
            let slot = if before.ends_with(b"\"total") {
                &mut self.total
            } else if before.ends_with(b"\"input") {
                &mut self.input
            } else if before.ends_with(b"\"output") {
                &mut self.output
            } else {
                continue;
            };
            if let Some(n) = number_after_colon(&data[at + 8..]) {
                *slot = (*slot).max(n);
            }
        }
    }

    /// The tokens to charge.
    pub fn tokens(&self) -> u64 {
        if self.total > 0 { self.total } else { self.input.saturating_add(self.output) }
    }
}

/// `: 123` → 123 (whitespace allowed around the colon).
fn number_after_colon(rest: &[u8]) -> Option<u64> {
    let mut i = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    if rest[i] != b':' {
        return None;
    }
    i += 1;
    while rest.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    let digits = rest[i..].iter().take_while(|b| b.is_ascii_digit()).take(19);
    let mut n: u64 = 0;
    let mut any = false;
    for d in digits {
        n = n * 10 + u64::from(d - b'0');
        any = true;
    }
    any.then_some(n)
}
