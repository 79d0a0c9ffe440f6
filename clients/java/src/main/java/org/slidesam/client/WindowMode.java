package org.slidesam.client;

/** How a field of view larger than one encoder window (1024 px at the resolution asked for) is segmented. */
public enum WindowMode {
    /** The server's choice: coarse to fine over windows at the resolution asked for when the region is larger. */
    AUTO,
    /** Coarse to fine over windows at the resolution asked for. */
    MULTI,
    /** Shrunk into one window: coarser than asked for, and the result says so. */
    SINGLE
}
