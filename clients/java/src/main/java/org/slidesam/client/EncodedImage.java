package org.slidesam.client;

import java.awt.image.BufferedImage;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import javax.imageio.ImageIO;

/** Encoded pixels (PNG or JPEG) and their SHA-256, the key the server stores them under. */
public final class EncodedImage {

    private final byte[] data;
    private final String sha256;

    private EncodedImage(byte[] data) {
        this.data = data.clone();
        this.sha256 = sha256Hex(this.data);
    }

    /** Already encoded bytes (PNG, JPEG or TIFF). */
    public static EncodedImage of(byte[] data) {
        return new EncodedImage(data);
    }

    /** An image encoded as PNG (lossless, so the server sees exactly these pixels). */
    public static EncodedImage png(BufferedImage image) {
        var out = new ByteArrayOutputStream();
        try {
            if (!ImageIO.write(image, "png", out)) {
                throw new IllegalArgumentException("no PNG writer for image type " + image.getType());
            }
        } catch (IOException error) {
            throw new UncheckedIOException(error);
        }
        return new EncodedImage(out.toByteArray());
    }

    public String sha256() {
        return sha256;
    }

    byte[] dataUnsafe() {
        return data;
    }

    static String sha256Hex(byte[] bytes) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(bytes));
        } catch (NoSuchAlgorithmException impossible) {
            throw new IllegalStateException(impossible);
        }
    }
}
