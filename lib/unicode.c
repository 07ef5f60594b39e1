#include "unicode.h"

size_t vk_utf8_len(uint8_t lead) {
    static const uint8_t len_by_high_nibble[16] = {1, 1, 1, 1, 1, 1, 1, 1,
                                                   1, 1, 1, 1, 2, 2, 3, 4};
    return len_by_high_nibble[lead >> 4];
}

static int is_cont(const char *s, size_t i) {
    return ((uint8_t)s[i] & 0xC0u) == 0x80u;
}

/* Same acceptance rules as llama.cpp's unicode_cpt_from_utf8: the lead byte decides the
 * length, continuation bytes must be 10xxxxxx; overlong forms and surrogates pass. */
uint32_t vk_utf8_decode(const char *s, size_t len, size_t *adv) {
    const uint8_t b0 = (uint8_t)s[0];
    uint32_t cp;
    *adv = 1;
    if (b0 < 0x80u) {
        return b0;
    }
    if (!(b0 & 0x40u)) {
        return VK_CP_REPLACEMENT;
    }
    if (!(b0 & 0x20u)) {
        if (len < 2 || !is_cont(s, 1)) {
            return VK_CP_REPLACEMENT;
        }
        *adv = 2;
        return ((uint32_t)(b0 & 0x1Fu) << 6) | ((uint8_t)s[1] & 0x3Fu);
    }
    if (!(b0 & 0x10u)) {
        if (len < 3 || !is_cont(s, 1) || !is_cont(s, 2)) {
            return VK_CP_REPLACEMENT;
        }
        *adv = 3;
        return ((uint32_t)(b0 & 0x0Fu) << 12) | ((uint32_t)((uint8_t)s[1] & 0x3Fu) << 6) |
               ((uint8_t)s[2] & 0x3Fu);
    }
    if (!(b0 & 0x08u)) {
        if (len < 4 || !is_cont(s, 1) || !is_cont(s, 2) || !is_cont(s, 3)) {
            return VK_CP_REPLACEMENT;
        }
        cp = ((uint32_t)(b0 & 0x07u) << 18) | ((uint32_t)((uint8_t)s[1] & 0x3Fu) << 12) |
             ((uint32_t)((uint8_t)s[2] & 0x3Fu) << 6) | ((uint8_t)s[3] & 0x3Fu);
        /* llama.cpp would throw later when re-encoding these; one U+FFFD per byte is
         * what it does for every other malformed byte. */
        if (cp > 0x10FFFFu) {
            return VK_CP_REPLACEMENT;
        }
        *adv = 4;
        return cp;
    }
    return VK_CP_REPLACEMENT;
}

size_t vk_utf8_encode(uint32_t cp, char out[4]) {
    if (cp > 0x10FFFFu) {
        cp = VK_CP_REPLACEMENT;
    }
    if (cp < 0x80u) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800u) {
        out[0] = (char)(0xC0u | (cp >> 6));
        out[1] = (char)(0x80u | (cp & 0x3Fu));
        return 2;
    }
    if (cp < 0x10000u) {
        out[0] = (char)(0xE0u | (cp >> 12));
        out[1] = (char)(0x80u | ((cp >> 6) & 0x3Fu));
        out[2] = (char)(0x80u | (cp & 0x3Fu));
        return 3;
    }
    out[0] = (char)(0xF0u | (cp >> 18));
    out[1] = (char)(0x80u | ((cp >> 12) & 0x3Fu));
    out[2] = (char)(0x80u | ((cp >> 6) & 0x3Fu));
    out[3] = (char)(0x80u | (cp & 0x3Fu));
    return 4;
}

uint16_t vk_ucp_flags(uint32_t cp) {
    uint32_t lo = 0, hi = vk_ucat_ranges_n; /* find the last range with start <= cp */
    if (cp > 0x10FFFFu) {
        return VK_UF_UNDEFINED;
    }
    while (hi - lo > 1) {
        const uint32_t mid = lo + (hi - lo) / 2;
        if (vk_ucat_ranges[mid].start <= cp) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return vk_ucat_ranges[lo].flags;
}

uint32_t vk_ucp_tolower(uint32_t cp) {
    uint32_t lo = 0, hi = vk_lower_map_n;
    while (lo < hi) {
        const uint32_t mid = lo + (hi - lo) / 2;
        if (vk_lower_map[mid].a < cp) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return (lo < vk_lower_map_n && vk_lower_map[lo].a == cp) ? vk_lower_map[lo].b : cp;
}

uint32_t vk_ucp_nfd_first(uint32_t cp) {
    uint32_t lo = 0, hi = vk_nfd_ranges_n; /* first range with first > cp */
    while (lo < hi) {
        const uint32_t mid = lo + (hi - lo) / 2;
        if (vk_nfd_ranges[mid].first <= cp) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo == 0) {
        return cp;
    }
    return cp <= vk_nfd_ranges[lo - 1].last ? vk_nfd_ranges[lo - 1].value : cp;
}

int vk_ucp_in_ranges(uint32_t cp, const vk_cp_pair *ranges, uint32_t n) {
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        const uint32_t mid = lo + (hi - lo) / 2;
        if (ranges[mid].b < cp) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo < n && ranges[lo].a <= cp;
}
