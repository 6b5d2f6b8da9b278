select transaction_id, is_fraud, source, reported_at, imported_at
from {{ source('bronze', 'feedback') }}
