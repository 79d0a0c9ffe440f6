package org.slidesam.client.live;

import java.util.List;

/** The class names that make an annotation a prompt (the bridge's convention and defaults). */
public record PromptClasses(String positive, String negative, String box) {

    public static final PromptClasses DEFAULT = new PromptClasses("SAM positive", "SAM negative", "SAM box");

    List<String> names() {
        return List.of(positive, negative, box);
    }
}
