package org.athe.core;

import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * A verified bundle folder: the manifest, and every artifact of one format checked for size and
 * sha256 before anything loads it ({@code athe.runtime.bundle.Bundle.open}, one format).
 *
 * <pre>{@code
 * Bundle bundle = Bundle.open(new File(filesDir, "bundle"), "tflite");
 * File router = bundle.artifactFile("router");
 * }</pre>
 */
public final class Bundle {
    private final File folder;
    private final Manifest manifest;
    private final String format;

    private Bundle(File folder, Manifest manifest, String format) {
        this.folder = folder;
        this.manifest = manifest;
        this.format = format;
    }

    /**
     * Read, validate and verify a bundle for one format.
     *
     * @param folder the bundle folder (holding {@code manifest.json})
     * @param format {@code tflite} or {@code pte}
     * @throws BundleException bad manifest, a format the bundle lacks, or a missing, truncated or
     *                         tampered artifact
     */
    public static Bundle open(File folder, String format) {
        if (!folder.isDirectory()) {
            throw new BundleException("bundle folder " + Py.str(folder.getPath())
                    + " not found; pass the folder 'athe convert' wrote");
        }
        Manifest manifest;
        try {
            manifest = Manifest.load(new File(folder, Manifest.FILE_NAME));
        } catch (ManifestException e) {
            throw new BundleException(e.getMessage(), e);
        }
        if (!Manifest.ALL_FORMATS.contains(format)) {
            throw new BundleException("unknown format(s) ['" + format + "']; formats: "
                    + String.join(", ", Manifest.ALL_FORMATS));
        }
        List<String> have = manifest.formats();
        if (!have.contains(format)) {
            throw new BundleException(lacksMessage(folder, format, have));
        }
        for (Map.Entry<String, Map<String, Artifact>> owner : manifest.artifacts().entrySet()) {
            Artifact artifact = owner.getValue().get(format);
            if (artifact != null) {
                verify(folder, owner.getKey(), format, artifact);
            }
        }
        return new Bundle(folder, manifest, format);
    }

    public File folder() {
        return folder;
    }

    public Manifest manifest() {
        return manifest;
    }

    /** The verified format. */
    public String format() {
        return format;
    }

    /** The verified file of {@code owner}: a level name, {@code stage:<name>} or {@code router}. */
    public File artifactFile(String owner) {
        Artifact artifact = manifest.artifacts().containsKey(owner) ? manifest.artifacts().get(owner).get(format)
                : null;
        if (artifact == null) {
            if ("router".equals(owner)) {
                throw new BundleException("bundle " + Py.str(folder.getPath())
                        + " has no router; use a fixed level");
            }
            if (owner.startsWith("stage:")) {
                throw new BundleException("bundle " + Py.str(folder.getPath()) + " has no stage "
                        + Py.str(owner.substring(6)) + "; stages: " + String.join(", ", manifest.stageNames()));
            }
            throw new BundleException("bundle " + Py.str(folder.getPath()) + " has no level " + Py.str(owner)
                    + "; levels: " + String.join(", ", manifest.levelNames()) + " (and 'router')");
        }
        return new File(folder, artifact.path());
    }

    /** Check that {@code artifact} exists with the manifest's size and sha256. */
    public static void verify(File folder, String owner, String format, Artifact artifact) {
        File file = new File(folder, artifact.path());
        String where = owner + " " + format + " artifact " + Py.str(file.getPath());
        if (!file.isFile()) {
            throw new BundleException(where + " is missing; copy the whole bundle folder, or open it with "
                    + "the format whose files you copied");
        }
        long size = file.length();
        if (size != artifact.bytes()) {
            String state = size < artifact.bytes() ? "truncated" : "larger than recorded";
            throw new BundleException(where + " is " + state + " (" + size + " bytes, manifest says "
                    + artifact.bytes() + "); copy it again from the converted bundle");
        }
        String digest = sha256(file);
        String want = artifact.sha256().toLowerCase(java.util.Locale.ROOT);
        if (!digest.equals(want)) {
            throw new BundleException(where + " failed sha256 verification (tampered or corrupted: "
                    + digest.substring(0, 12) + "\u2026 != " + prefix(artifact.sha256(), 12)
                    + "\u2026); refusing to load it: copy it again or re-run 'athe convert'");
        }
    }

    /** Hex sha256 of a file, read in 1 MiB chunks. */
    public static String sha256(File file) {
        MessageDigest digest;
        try {
            digest = MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("this JVM has no SHA-256", e);
        }
        byte[] buffer = new byte[1 << 20];
        try (InputStream in = new FileInputStream(file)) {
            int n;
            while ((n = in.read(buffer)) > 0) {
                digest.update(buffer, 0, n);
            }
        } catch (IOException e) {
            throw new BundleException(Py.str(file.getPath()) + " cannot be read (" + e.getMessage() + ")", e);
        }
        StringBuilder hex = new StringBuilder();
        for (byte b : digest.digest()) {
            hex.append(String.format("%02x", b & 0xFF));
        }
        return hex.toString();
    }

    private static String prefix(String text, int n) {
        return text.length() <= n ? text : text.substring(0, n);
    }

    private static String lacksMessage(File folder, String format, List<String> have) {
        List<String> has = new ArrayList<>(have);
        return "bundle " + Py.str(folder.getPath()) + " lacks format(s) " + format + " (it has: "
                + (has.isEmpty() ? "none" : String.join(", ", has))
                + "); convert with that format or pick a backend for one it has";
    }
}
