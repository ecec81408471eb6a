class UserError(Exception):
    """Bad input from the user: the CLI prints the message on one line and exits with status 2.

    Messages name the offending thing and the fix, e.g.
    "config.json: unknown key 'n_layers' in model (known: n_layer, d_model, ...)".
    """
