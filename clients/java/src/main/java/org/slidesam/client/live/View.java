package org.slidesam.client.live;

import org.slidesam.client.Rect;

/** What the viewer shows when prompts change: the selected annotation's bounds (or null) and the visible region. */
public record View(Rect selection, Rect visible) {
}
