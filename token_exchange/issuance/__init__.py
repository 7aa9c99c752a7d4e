"""Carrying a decision out: minting the tokens, the audit trail (``audit``, and ``change_audit``
for changes to grants, keys, policies and users), what each issued token descends from
(``lineage``) and revoking what was issued. Nothing here decides.
"""
