package org.slidesam.client;

/** What the server stored for an upload: the SHA-256 it is known by and its decoded size. */
public record UploadResult(String sha256, int width, int height, boolean alreadyPresent) {
}
