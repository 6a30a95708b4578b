"""Operations over jobs and lakes: status, doctor, job records, pipelines, gc, dry runs."""
