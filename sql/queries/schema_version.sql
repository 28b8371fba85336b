-- Applied migrations, for `pulse migrate` to compare with the ones this build carries.
-- params: none
-- example:
SELECT version, name, checksum
FROM schema_migrations
ORDER BY version
