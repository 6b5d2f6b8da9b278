-- Gold adds up: the daily and hourly aggregates count every fact row once, and every silver
-- transaction is in the fact table (a row here is a mismatch, named by its measure).
with counts as (
    select 'silver transactions' as measure, count(*)::numeric as value from {{ ref('transactions') }}
    union all
    select 'fact rows', count(*) from {{ ref('fact_transactions') }}
    union all
    select 'daily transactions', coalesce(sum(transactions), 0) from {{ ref('agg_daily_fraud') }}
    union all
    select 'hourly transactions', coalesce(sum(transactions), 0) from {{ ref('agg_hourly_sales') }}
)
select measure, value from counts
where value <> (select value from counts where measure = 'silver transactions')
