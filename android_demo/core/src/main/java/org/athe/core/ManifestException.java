package org.athe.core;

/** A manifest that cannot be used; the message names the field and the fix (as the Python runtime's). */
public class ManifestException extends IllegalArgumentException {
    private static final long serialVersionUID = 1L;

    public ManifestException(String message) {
        super(message);
    }

    public ManifestException(String message, Throwable cause) {
        super(message, cause);
    }
}
