#!/usr/bin/env python3
"""Generates lib/unicode_tables.c: the Unicode data the tokenizer's pre-tokenizers need.

    python3 tests/tools/gen_unicode_tables.py > lib/unicode_tables.c

Everything comes from Python's own `unicodedata` module (its Unicode version is written
into the output), plus two fixed lists written out below:
  - White_Space: the Unicode White_Space property (PropList.txt), which is what the
    `\\s` of the regexes in tokenizer.json files means. `unicodedata` has no accessor for
    it; str.isspace() differs (it also accepts U+001C..U+001F). The list has not changed
    since Unicode 6.3.
  - DeepSeek-LLM's letter class: the literal character class of its pre-tokenizer regex
    (from the model's tokenizer.json, as llama.cpp uses it), written as hex ranges so that
    no editor's Unicode normalisation can change it (several of its characters, e.g.
    U+1F7D, U+2126, U+212A, have singleton canonical decompositions). It is the
    Cased_Letter set (Lu, Ll, Lt) of an older Unicode version; main() checks that it
    is a subset of the current one.

Tables:
  vk_ucat_ranges   runs of code points with the same flags (category bit + white space bit)
  vk_lower_map     code point -> first code point of its lowercase form
  vk_nfd_ranges    code point -> first code point of its NFD decomposition (used to strip
                   accents the way llama.cpp's WordPiece normaliser does)
  vk_dsllm_letters DeepSeek-LLM letter class ranges
"""
import sys
import unicodedata

MAX_CP = 0x110000

# flag bits; must match lib/unicode.h
F_NUMBER, F_LETTER, F_SEPARATOR, F_MARK = 0x02, 0x04, 0x08, 0x10
F_PUNCT, F_SYMBOL, F_CONTROL, F_SPACE = 0x20, 0x40, 0x80, 0x100
CAT_BIT = {"N": F_NUMBER, "L": F_LETTER, "Z": F_SEPARATOR, "M": F_MARK,
           "P": F_PUNCT, "S": F_SYMBOL, "C": F_CONTROL}

WHITE_SPACE = [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
               0x2028, 0x2029, 0x202F, 0x205F, 0x3000]

DSLLM_LETTER_RANGES = [  # inclusive code point ranges
    (0x0041, 0x005A), (0x0061, 0x007A), (0x00B5, 0x00B5), (0x00C0, 0x00D6),
    (0x00D8, 0x00F6), (0x00F8, 0x01BA), (0x01BC, 0x01BF), (0x01C4, 0x0293),
    (0x0295, 0x02AF), (0x0370, 0x0373), (0x0376, 0x0376), (0x0377, 0x0377),
    (0x037B, 0x037D), (0x037F, 0x037F), (0x0386, 0x0386), (0x0388, 0x038A),
    (0x038C, 0x038C), (0x038E, 0x03A1), (0x03A3, 0x03F5), (0x03F7, 0x0481),
    (0x048A, 0x052F), (0x0531, 0x0556), (0x10A0, 0x10C5), (0x13A0, 0x13F5),
    (0x13F8, 0x13FD), (0x1C90, 0x1CBA), (0x1CBD, 0x1CBF), (0x1D00, 0x1D2B),
    (0x1D6B, 0x1D77), (0x1D79, 0x1D9A), (0x1E00, 0x1F15), (0x1F18, 0x1F1D),
    (0x1F20, 0x1F45), (0x1F48, 0x1F4D), (0x1F50, 0x1F57), (0x1F59, 0x1F59),
    (0x1F5B, 0x1F5B), (0x1F5D, 0x1F5D), (0x1F5F, 0x1F7D), (0x1F80, 0x1FB4),
    (0x1FB6, 0x1FBC), (0x1FBE, 0x1FBE), (0x1FC2, 0x1FC4), (0x1FC6, 0x1FCC),
    (0x1FD0, 0x1FD3), (0x1FD6, 0x1FDB), (0x1FE0, 0x1FEC), (0x1FF2, 0x1FF4),
    (0x1FF6, 0x1FFC), (0x2102, 0x2102), (0x2107, 0x2107), (0x210A, 0x2113),
    (0x2115, 0x2115), (0x2119, 0x211D), (0x2124, 0x2124), (0x2126, 0x2126),
    (0x2128, 0x2128), (0x212A, 0x212D), (0x212F, 0x2134), (0x2139, 0x2139),
    (0x213C, 0x213F), (0x2145, 0x2149), (0x214E, 0x214E), (0x2183, 0x2183),
    (0x2184, 0x2184), (0x2C00, 0x2C7B), (0x2C7E, 0x2CE4), (0x2CEB, 0x2CEE),
    (0x2CF2, 0x2CF2), (0x2CF3, 0x2CF3), (0xA640, 0xA66D), (0xA680, 0xA69B),
    (0xA722, 0xA76F), (0xA771, 0xA787), (0xA78B, 0xA78E), (0xAB70, 0xABBF),
    (0xFB00, 0xFB06), (0xFB13, 0xFB17), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A),
    (0x10400, 0x1044F), (0x104B0, 0x104D3), (0x104D8, 0x104FB), (0x10C80, 0x10CB2),
    (0x10CC0, 0x10CF2), (0x118A0, 0x118DF), (0x1E900, 0x1E943),
]


def main():
    ws = set(WHITE_SPACE)
    for cp in ws:
        assert chr(cp).isspace(), hex(cp)

    flags = [0] * MAX_CP
    lower = []
    nfd = []
    for cp in range(MAX_CP):
        ch = chr(cp)
        f = CAT_BIT[unicodedata.category(ch)[0]]
        if cp in ws:
            f |= F_SPACE
        flags[cp] = f
        lo = ord(ch.lower()[0])
        if lo != cp:
            lower.append((cp, lo))
        d = ord(unicodedata.normalize("NFD", ch)[0])
        if d != cp:
            nfd.append((cp, d))

    runs = []
    for cp in range(MAX_CP):
        if not runs or runs[-1][1] != flags[cp]:
            runs.append((cp, flags[cp]))

    nfd_ranges = []  # (first, last, value): consecutive code points with the same value
    for cp, d in nfd:
        if nfd_ranges and nfd_ranges[-1][1] == cp - 1 and nfd_ranges[-1][2] == d:
            nfd_ranges[-1] = (nfd_ranges[-1][0], cp, d)
        else:
            nfd_ranges.append((cp, cp, d))

    letters = DSLLM_LETTER_RANGES
    cased = {"Lu", "Ll", "Lt"}
    for lo, hi in letters:
        assert lo <= hi
        for cp in range(lo, hi + 1):
            assert unicodedata.category(chr(cp)) in cased, hex(cp)

    w = sys.stdout.write
    w("/* GENERATED FILE, do not edit. Made by tests/tools/gen_unicode_tables.py:\n")
    w(" *     python3 tests/tools/gen_unicode_tables.py > lib/unicode_tables.c\n")
    w(" * from Python %s's unicodedata, Unicode %s. See the script for what each table is. */\n"
      % (sys.version.split()[0], unicodedata.unidata_version))
    w('#include "unicode.h"\n\n')
    w('const char vk_unicode_version[] = "%s";\n\n' % unicodedata.unidata_version)

    w("const vk_ucat_range vk_ucat_ranges[] = {\n")
    for i in range(0, len(runs), 4):
        w("    " + " ".join("{0x%06X, 0x%03X}," % r for r in runs[i:i + 4]) + "\n")
    w("};\nconst uint32_t vk_ucat_ranges_n = %d;\n\n" % len(runs))

    w("const vk_cp_pair vk_lower_map[] = {\n")
    for i in range(0, len(lower), 4):
        w("    " + " ".join("{0x%05X, 0x%05X}," % p for p in lower[i:i + 4]) + "\n")
    w("};\nconst uint32_t vk_lower_map_n = %d;\n\n" % len(lower))

    w("const vk_cp_range_map vk_nfd_ranges[] = {\n")
    for i in range(0, len(nfd_ranges), 3):
        w("    " + " ".join("{0x%05X, 0x%05X, 0x%05X}," % t for t in nfd_ranges[i:i + 3]) + "\n")
    w("};\nconst uint32_t vk_nfd_ranges_n = %d;\n\n" % len(nfd_ranges))

    w("const vk_cp_pair vk_dsllm_letters[] = {\n")
    for i in range(0, len(letters), 4):
        w("    " + " ".join("{0x%05X, 0x%05X}," % p for p in letters[i:i + 4]) + "\n")
    w("};\nconst uint32_t vk_dsllm_letters_n = %d;\n" % len(letters))


if __name__ == "__main__":
    main()
