package org.slidesam.client.live;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

/**
 * The bridge's --slide-map: rules LOCAL_PREFIX=SERVER_PREFIX that turn an image's local path (or
 * URI) into the id the server knows the slide by; the longest matching local prefix wins.
 */
public final class SlideMap {

    private record Rule(String local, String server) {
    }

    private final List<Rule> rules;

    private SlideMap(List<Rule> rules) {
        this.rules = rules;
    }

    /** Rules as "LOCAL_PREFIX=SERVER_PREFIX"; e.g. "/mnt/slides=cases" maps /mnt/slides/a/b.svs to cases/a/b.svs. */
    public static SlideMap parse(List<String> specs) {
        var rules = new ArrayList<Rule>();
        for (String spec : specs) {
            int equals = spec.indexOf('=');
            if (equals <= 0) {
                throw new IllegalArgumentException("a slide map rule is LOCAL_PREFIX=SERVER_PREFIX, got '" + spec + "'");
            }
            rules.add(new Rule(spec.substring(0, equals), strip(spec.substring(equals + 1))));
        }
        rules.sort(Comparator.comparingInt((Rule r) -> r.local().length()).reversed());
        return new SlideMap(List.copyOf(rules));
    }

    /** The server's slide id for an image with this local path and URI (either may be null), or null. */
    public String slideId(String localPath, String uri) {
        for (Rule rule : rules) {
            for (String candidate : new String[] {localPath == null ? null : localPath.replace('\\', '/'), uri}) {
                if (candidate != null && candidate.startsWith(rule.local())) {
                    String rest = candidate.substring(rule.local().length()).replaceFirst("^/+", "");
                    return rule.server().isEmpty() ? rest : rule.server() + "/" + rest;
                }
            }
        }
        return null;
    }

    private static String strip(String prefix) {
        return prefix.replaceAll("^/+|/+$", "");
    }
}
