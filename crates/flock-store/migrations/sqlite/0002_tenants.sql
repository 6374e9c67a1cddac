-- Tenants: every artifact and delivery is stamped with the tenant that owns it (a workflow is
-- its artifacts, so it is the tenant of its first one). Rows written before tenants existed
-- belong to tenant `default`, the tenant of requests served without a key.
ALTER TABLE artifacts ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE deliveries ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';

-- A tenant's listing, in publication order, without reading other tenants' rows.
CREATE INDEX artifacts_by_tenant ON artifacts (tenant, position);
