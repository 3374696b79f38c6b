package amazonrec;

/**
 * The clean job's analysable copy of a text in one pass over its characters, for Spark's
 * {@code reflect} (spark_jobs/text_clean.py). It gives exactly what these regular expressions give,
 * which is what text_clean.py falls back to where this class cannot be built (no javac):
 *
 * <pre>
 *   trim(lower(regexp_replace(regexp_replace(text, "(?i)\b(?:https?://|www\.)\S+", " "), "[^\p{L}\p{N}]+", " ")))
 * </pre>
 *
 * Those took 40% of clean's time on release-shaped data (bench/clean_phases.py); each regular
 * expression copies the text to a Java string and back and walks it again. Here: a URL where
 * Java's {@code \b} holds before it (its rule, combining marks included, copied from
 * java.util.regex.Pattern.Bound in Java 17) and {@code \S} is Java's ASCII whitespace; letters
 * and numbers by their Unicode category as {@code \p{L}} and {@code \p{N}} test it; lower case as
 * Spark's {@code lower} does it (per byte when the text is ASCII, else String.toLowerCase()).
 * tests/integration/test_text_clean_spark.py checks both forms against the first three-pass one.
 */
public final class CleanText {
    private CleanText() {
    }

    /** The analysable copy of {@code text}; "" for null. */
    public static String clean(String text) {
        if (text == null) {
            return "";
        }
        int n = text.length();
        StringBuilder out = new StringBuilder(n);
        boolean gap = false;
        boolean ascii = true;
        int i = 0;
        while (i < n) {
            char c = text.charAt(i);
            if (c == 'h' || c == 'H' || c == 'w' || c == 'W') {
                int end = urlEnd(text, i);
                if (end >= 0) {
                    gap = true;
                    i = end;
                    continue;
                }
            }
            int cp = Character.isHighSurrogate(c) ? text.codePointAt(i) : c;
            if (isLetterOrNumber(cp)) {
                if (gap && out.length() > 0) {
                    out.append(' ');
                }
                gap = false;
                out.appendCodePoint(cp);
                ascii &= cp < 128;
            } else {
                gap = true;
            }
            i += Character.charCount(cp);
        }
        if (!ascii) {
            return out.toString().toLowerCase();
        }
        for (int k = 0; k < out.length(); k++) {
            char o = out.charAt(k);
            if (o >= 'A' && o <= 'Z') {
                out.setCharAt(k, (char) (o + ('a' - 'A')));
            }
        }
        return out.toString();
    }

    /** {@code \p{L}} or {@code \p{N}}. */
    static boolean isLetterOrNumber(int cp) {
        if (cp < 128) {
            return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || (cp >= '0' && cp <= '9');
        }
        switch (Character.getType(cp)) {
            case Character.UPPERCASE_LETTER:
            case Character.LOWERCASE_LETTER:
            case Character.TITLECASE_LETTER:
            case Character.MODIFIER_LETTER:
            case Character.OTHER_LETTER:
            case Character.DECIMAL_DIGIT_NUMBER:
            case Character.LETTER_NUMBER:
            case Character.OTHER_NUMBER:
                return true;
            default:
                return false;
        }
    }

    /** Where a URL starting at {@code i} ends, or -1 when none starts there. */
    static int urlEnd(String text, int i) {
        int rest;
        if (startsWithIgnoringAsciiCase(text, i, "https://")) {
            rest = i + 8;
        } else if (startsWithIgnoringAsciiCase(text, i, "http://")) {
            rest = i + 7;
        } else if (startsWithIgnoringAsciiCase(text, i, "www.")) {
            rest = i + 4;
        } else {
            return -1;
        }
        if (wordBefore(text, i)) {
            return -1;  // no \b: its first letter is a word character, so one must not come before it
        }
        int end = rest;
        while (end < text.length() && !isAsciiSpace(text.charAt(end))) {
            end++;
        }
        return end > rest ? end : -1;  // \S+ needs one character at least
    }

    static boolean startsWithIgnoringAsciiCase(String text, int i, String lower) {
        if (i + lower.length() > text.length()) {
            return false;
        }
        for (int k = 0; k < lower.length(); k++) {
            char c = text.charAt(i + k);
            if (c >= 'A' && c <= 'Z') {
                c = (char) (c + ('a' - 'A'));
            }
            if (c != lower.charAt(k)) {
                return false;
            }
        }
        return true;
    }

    static boolean isAsciiSpace(char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == 0x0B || c == '\f' || c == '\r';
    }

    /** The left side of java.util.regex.Pattern.Bound.check (Java 17) at {@code i}. */
    static boolean wordBefore(String text, int i) {
        if (i == 0) {
            return false;
        }
        int ch = text.codePointBefore(i);
        return isWord(ch) || (Character.getType(ch) == Character.NON_SPACING_MARK && hasBaseCharacter(text, i - 1));
    }

    static boolean isWord(int ch) {
        return ch == '_' || Character.isLetterOrDigit(ch);
    }

    /** java.util.regex.Pattern.hasBaseCharacter: a letter or digit before a run of combining marks. */
    static boolean hasBaseCharacter(String text, int i) {
        for (int x = i; x >= 0; x--) {
            int ch = text.codePointAt(x);
            if (Character.isLetterOrDigit(ch)) {
                return true;
            }
            if (Character.getType(ch) != Character.NON_SPACING_MARK) {
                return false;
            }
        }
        return false;
    }
}
