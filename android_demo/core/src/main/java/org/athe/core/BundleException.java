package org.athe.core;

/** A bundle folder that cannot be used: missing, truncated or tampered files, a missing format. */
public class BundleException extends IllegalArgumentException {
    private static final long serialVersionUID = 1L;

    public BundleException(String message) {
        super(message);
    }

    public BundleException(String message, Throwable cause) {
        super(message, cause);
    }
}
