"""Examples that run beside kgverify."""
