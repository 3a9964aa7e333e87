package org.athe.core;

/** A dispatcher setting or model that cannot work (policy, thresholds, shapes); the message says the fix. */
public class DispatchException extends IllegalArgumentException {
    private static final long serialVersionUID = 1L;

    public DispatchException(String message) {
        super(message);
    }
}
