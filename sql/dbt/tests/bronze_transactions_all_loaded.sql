-- Every bronze transaction older than the look-back has reached silver. Silver reads bronze by
-- load time, going back `ingest_lookback` before the newest row it has; a writer whose
-- transaction committed later than that would be skipped for good: this check names such rows
-- (docs/runbook.md: rebuild with a longer look-back). Looks at the quality window only.
select b.transaction_id, b.ingested_at
from {{ source('bronze', 'transactions') }} as b
where b.ingested_at > now() - interval '{{ var("quality_window") }}'
  and b.ingested_at < (select max(ingested_at) from {{ ref('transactions') }})
                      - interval '{{ var("ingest_lookback") }}'
  and not exists (
      select 1 from {{ ref('transactions') }} as s where s.transaction_id = b.transaction_id
  )
