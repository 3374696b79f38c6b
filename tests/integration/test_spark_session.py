"""spark_jobs.common.spark_session: settings a long job depends on."""


def test_old_shuffle_files_are_cleaned_every_five_minutes(spark):
    # the driver's GC is what lets Spark delete finished shuffles; Spark's default of 30 min let
    # one MLlib train fill 48 GB of executor disk (docs/benchmarks.md, train --engine spark at 25.7M)
    assert spark.sparkContext.getConf().get("spark.cleaner.periodicGC.interval") == "5min"
