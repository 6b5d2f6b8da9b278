-- What CloudNativePG's metrics exporter reads (the custom queries the operator renders for the
-- pipeline's Cluster, ADR 0044): the warehouse's freshness as numbers, nothing else. The exporter
-- runs each query as `SET ROLE pg_monitor` in a read-only transaction; pg_monitor may call these
-- two functions (SECURITY DEFINER, owned by the warehouse's owner) and read no table itself.
-- plpgsql: silver and gold are dbt's tables and do not exist before the first build.
CREATE SCHEMA monitoring;

-- The newest bronze transaction's age, in seconds (NULL: none yet). The streaming jobs write
-- bronze continuously: while transactions arrive, this stays within seconds. (Its index on
-- ingested_at makes this one index read.)
CREATE FUNCTION monitoring.bronze_age()
RETURNS TABLE (table_name text, newest_age_seconds double precision)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT 'transactions'::text, extract(epoch FROM now() - max(t.ingested_at))::float8
    FROM bronze.transactions AS t;
END
$$;

-- How far each built layer is behind the one below, in seconds: the age (since it reached
-- bronze) of the oldest transaction the layer has not taken in yet; 0 when it has them all.
-- silver: bronze transactions newer than silver's newest and not in silver (a duplicate that
-- silver rightly skipped is in silver by its transaction_id). gold: silver transactions loaded
-- after gold.fact_transactions' watermark. Both read an index in order and stop at one row.
CREATE FUNCTION monitoring.warehouse_lag()
RETURNS TABLE (layer text, lag_seconds double precision)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    oldest timestamptz;
BEGIN
    IF to_regclass('silver.transactions') IS NULL THEN  -- never built: all of bronze waits
        SELECT min(b.ingested_at) INTO oldest FROM bronze.transactions AS b;
    ELSE
        EXECUTE $q$
            SELECT b.ingested_at FROM bronze.transactions AS b
            WHERE b.ingested_at > (SELECT coalesce(max(s.ingested_at), '-infinity')
                                   FROM silver.transactions AS s)
              AND NOT EXISTS (SELECT 1 FROM silver.transactions AS s
                              WHERE s.transaction_id = b.transaction_id)
            ORDER BY b.ingested_at LIMIT 1
        $q$ INTO oldest;
    END IF;
    layer := 'silver';
    lag_seconds := coalesce(extract(epoch FROM now() - oldest)::float8, 0);
    RETURN NEXT;

    oldest := NULL;
    IF to_regclass('silver.transactions') IS NOT NULL THEN
        IF to_regclass('silver.watermarks') IS NULL OR to_regclass('gold.fact_transactions') IS NULL
        THEN
            SELECT min(s.ingested_at) INTO oldest FROM silver.transactions AS s;
        ELSE
            EXECUTE $q$
                SELECT s.ingested_at FROM silver.transactions AS s
                WHERE s._loaded_at > coalesce(
                    (SELECT w.loaded_at FROM silver.watermarks AS w
                     WHERE w.model = 'gold.fact_transactions'), '-infinity')
                ORDER BY s._loaded_at LIMIT 1
            $q$ INTO oldest;
        END IF;
    END IF;
    layer := 'gold';
    lag_seconds := coalesce(extract(epoch FROM now() - oldest)::float8, 0);
    RETURN NEXT;
END
$$;

REVOKE ALL ON FUNCTION monitoring.bronze_age(), monitoring.warehouse_lag() FROM PUBLIC;
GRANT USAGE ON SCHEMA monitoring TO pg_monitor;
GRANT EXECUTE ON FUNCTION monitoring.bronze_age(), monitoring.warehouse_lag() TO pg_monitor;
