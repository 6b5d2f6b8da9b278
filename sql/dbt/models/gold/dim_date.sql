-- Every UTC day from the first to the last transaction (cheap: two index look-ups).
{{ config(materialized='table', indexes=[{'columns': ['date_day'], 'unique': True}]) }}

with bounds as (
    select
        (min(event_time) at time zone 'UTC')::date as first_day,
        (max(event_time) at time zone 'UTC')::date as last_day
    from {{ ref('transactions') }}
)

select
    d::date as date_day,
    extract(isoyear from d)::int as iso_year,
    extract(week from d)::int as iso_week,
    extract(year from d)::int as year,
    extract(quarter from d)::int as quarter,
    extract(month from d)::int as month,
    extract(day from d)::int as day_of_month,
    extract(isodow from d)::int as iso_day_of_week,
    to_char(d, 'FMDay') as day_name,
    extract(isodow from d) >= 6 as is_weekend
from bounds, generate_series(bounds.first_day, bounds.last_day, interval '1 day') as d
