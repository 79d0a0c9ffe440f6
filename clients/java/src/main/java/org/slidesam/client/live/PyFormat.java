package org.slidesam.client.live;

import java.math.BigDecimal;
import java.math.MathContext;
import java.math.RoundingMode;
import java.util.Collection;
import java.util.Map;
import java.util.TreeMap;

/**
 * Text exactly as the Python bridge writes it: {@code json.dumps} (float repr, key order, escapes),
 * {@code round(x, n)}, {@code format(x, "g")} and {@code repr(str)}. The prompt hash and the
 * provenance of a result written here must equal the bridge's, so that {@code slidesam sync}
 * recognises results made in QuPath.
 */
final class PyFormat {

    private PyFormat() {
    }

    /** json.dumps(value, sort_keys=True, separators=(",", ":")) (ASCII only, as for the prompt hash). */
    static String canonicalJson(Object value) {
        var out = new StringBuilder();
        json(out, value, true, ",", ":", true);
        return out.toString();
    }

    /** json.dumps(value, ensure_ascii=False): insertion order, ", " and ": " (as for the provenance). */
    static String json(Object value) {
        var out = new StringBuilder();
        json(out, value, false, ", ", ": ", false);
        return out.toString();
    }

    private static void json(StringBuilder out, Object value, boolean sort, String comma, String colon, boolean ascii) {
        if (value == null) {
            out.append("null");
        } else if (value instanceof String text) {
            string(out, text, ascii);
        } else if (value instanceof Boolean flag) {
            out.append(flag ? "true" : "false");
        } else if (value instanceof Double || value instanceof Float) {
            out.append(floatRepr(((Number) value).doubleValue()));
        } else if (value instanceof Number number) {
            out.append(number.longValue());
        } else if (value instanceof Map<?, ?> map) {
            out.append('{');
            String separator = "";
            for (Map.Entry<?, ?> entry : (sort ? new TreeMap<>(map) : map).entrySet()) {
                out.append(separator);
                string(out, (String) entry.getKey(), ascii);
                out.append(colon);
                json(out, entry.getValue(), sort, comma, colon, ascii);
                separator = comma;
            }
            out.append('}');
        } else if (value instanceof Collection<?> list) {
            out.append('[');
            String separator = "";
            for (Object item : list) {
                out.append(separator);
                json(out, item, sort, comma, colon, ascii);
                separator = comma;
            }
            out.append(']');
        } else {
            throw new IllegalArgumentException("no JSON form for " + value.getClass());
        }
    }

    private static void string(StringBuilder out, String text, boolean ascii) {
        out.append('"');
        for (char c : text.toCharArray()) {
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\n' -> out.append("\\n");
                case '\r' -> out.append("\\r");
                case '\t' -> out.append("\\t");
                case '\b' -> out.append("\\b");
                case '\f' -> out.append("\\f");
                default -> {
                    if (c < 0x20 || (ascii && c > 0x7e)) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        out.append('"');
    }

    /** repr(float): the shortest digits that read back as the same double; exponent form outside 1e-4..1e16. */
    static String floatRepr(double value) {
        if (!Double.isFinite(value)) {
            return Double.isNaN(value) ? "NaN" : value > 0 ? "Infinity" : "-Infinity";
        }
        if (value == 0) {
            return 1 / value < 0 ? "-0.0" : "0.0";
        }
        BigDecimal exact = new BigDecimal(value);
        BigDecimal shortest = exact;
        for (int digits = 1; digits <= 17; digits++) {
            BigDecimal rounded = exact.round(new MathContext(digits, RoundingMode.HALF_EVEN));
            if (rounded.doubleValue() == value) {
                shortest = rounded;
                break;
            }
        }
        return decimal(shortest.stripTrailingZeros(), 16, true);
    }

    /** format(value, "g"): 6 significant digits, trailing zeros dropped, exponent form outside 1e-4..1e6. */
    static String general(double value) {
        if (value == 0) {
            return 1 / value < 0 ? "-0" : "0";
        }
        BigDecimal rounded = new BigDecimal(value).round(new MathContext(6, RoundingMode.HALF_EVEN)).stripTrailingZeros();
        return decimal(rounded, 6, false);
    }

    /** round(value, places), rounding the exact binary value half to even as Python does. */
    static double round(double value, int places) {
        return new BigDecimal(value).setScale(places, RoundingMode.HALF_EVEN).doubleValue();
    }

    /** repr(str) for the strings the bridge quotes in its messages. */
    static String repr(String text) {
        char quote = text.indexOf('\'') >= 0 && text.indexOf('"') < 0 ? '"' : '\'';
        var out = new StringBuilder().append(quote);
        for (char c : text.toCharArray()) {
            if (c == quote || c == '\\') {
                out.append('\\').append(c);
            } else if (c == '\n') {
                out.append("\\n");
            } else if (c == '\r') {
                out.append("\\r");
            } else if (c == '\t') {
                out.append("\\t");
            } else if (c < 0x20 || c == 0x7f) {
                out.append(String.format("\\x%02x", (int) c));
            } else {
                out.append(c);
            }
        }
        return out.append(quote).toString();
    }

    /** A decimal (trailing zeros stripped) in fixed notation for exponents in [-4, limit), else d.ddde+XX. */
    private static String decimal(BigDecimal number, int limit, boolean pointZero) {
        String digits = number.unscaledValue().abs().toString();
        int exponent = digits.length() - 1 - number.scale();
        String sign = number.signum() < 0 ? "-" : "";
        if (exponent >= -4 && exponent < limit) {
            String plain = number.abs().toPlainString();
            return sign + (pointZero && plain.indexOf('.') < 0 ? plain + ".0" : plain);
        }
        String mantissa = digits.length() == 1 ? digits : digits.charAt(0) + "." + digits.substring(1);
        return sign + mantissa + (exponent < 0 ? "e-" : "e+") + String.format("%02d", Math.abs(exponent));
    }
}
